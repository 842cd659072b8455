"""What the suite knows about each dataset: where its files go, its pixel statistics, its class names, which
augmentations fit it and the recipe it trains with by default. Imported by the config (which needs the names, the
default presets and what fits) and by the input pipeline; it imports nothing of ours."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_name: str  # its class in torchvision.datasets: the download, and the folder DATA_DIR/<name>/raw/
    mean: float  # per-pixel statistics of the training set, used by the model's input adapter
    std: float
    sha256: dict[str, str] | None  # of the uncompressed IDX files, checked when extracting a shipped .gz
    classes: tuple[str, ...]  # the name of each label, in label order (what predict.py prints)
    title: str  # the dataset's name in prose (the model card)
    item: str  # what one image shows, in prose ("digit"): the demo page's words
    hub_id: str  # the dataset's id on the Hugging Face Hub (the model card's metadata)
    preset: str  # the named recipe train.py trains on this dataset when no --preset is given
    mirror_invariant: bool  # a mirrored picture still shows its class (a sneaker; not a 2): --hflip fits it
    # How its authors framed an item in the 28x28 image, which predict.py repeats for a user's picture: the item's
    # longer side scaled to item_box pixels, then centred by its centre of mass ("mass") or its bounding box ("box").
    item_box: int
    centring: Literal["mass", "box"]
    examples: str  # the folder of docs/ whose pictures (its test images redrawn as photos) the demo page offers

    def __post_init__(self) -> None:
        if self.centring not in ("mass", "box"):
            raise ValueError(f"centring must be 'mass' or 'box', got {self.centring!r}")

    @property
    def folder(self) -> str:
        return self.torchvision_name  # torchvision's layout: DATA_DIR/<ClassName>/raw/


DATASETS = {
    "mnist": DatasetInfo("MNIST", 0.1307, 0.3081, {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    }, tuple("0123456789"), "MNIST", "digit", "ylecun/mnist", preset="default", mirror_invariant=False,
        item_box=20, centring="mass", examples="pictures"),
    # torchvision's names (FashionMNIST.classes), in Zalando's label order (7 is Sneaker, 8 is Bag).
    "fashion-mnist": DatasetInfo("FashionMNIST", 0.2860, 0.3530, None, (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "Fashion-MNIST", "garment", "zalando-datasets/fashion_mnist", preset="fashion", mirror_invariant=True,
        # Zalando trimmed each product photo, scaled its longest edge to 28 and centred it on the canvas.
        item_box=28, centring="box", examples="garments"),
}
