"""The files of every dataset vaelab downloads by name, with the SHA-256 each must have.

`DATASETS[name]` lists the files that `--data NAME` needs in the cache (`vaelab.data.download`),
each with its upstream URL, its size in bytes and its pinned SHA-256. Where each hash comes from:

- TFDS: the checksum files of TensorFlow Datasets (`tensorflow_datasets/url_checksums/NAME.txt`
  in github.com/tensorflow/datasets: mnist, fashion_mnist, kmnist, binarized_mnist, cifar10,
  svhn_cropped), which record URL, size and SHA-256 of each file TFDS downloads.
- shared: also computed here from the official MNIST test files in the project's reference data
  (`shared/data/SHA256SUMS`), byte-identical to the files users download; they agree with TFDS.
- UNVERIFIED: no SHA-256 could be found for the file offline when this registry was written
  (`sha256=None`). Such a file is downloaded over the checksum-free path, its format checked by
  its reader, and its actual SHA-256 logged, so that a user can compare it with a trusted copy.
  A hash is never invented here.

`celeba` is not in the table: its host serves the files through a page that a script cannot
fetch, so it is read only from a folder the user points to (`--data celeba:DIR`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the cache, where it is downloaded from, its size in
    bytes and SHA-256 (both None where no hash could be verified; see the module docstring)."""

    name: str
    url: str
    size: int | None
    sha256: str | None
    hash_source: str


@dataclass(frozen=True)
class RemoteDataset:
    """The files `--data NAME` needs in the cache directory CACHE/NAME."""

    name: str
    files: tuple[RemoteFile, ...]


def _dataset(
    name: str, base_url: str, hash_source: str, files: dict[str, tuple[int | None, str | None]]
) -> RemoteDataset:
    return RemoteDataset(
        name,
        tuple(
            RemoteFile(file, base_url + file, size, sha256, hash_source)
            for file, (size, sha256) in files.items()
        ),
    )


TFDS = "TFDS url_checksums/{}.txt"
UNVERIFIED = "UNVERIFIED: no SHA-256 could be verified offline; the downloaded file's hash is logged"

DATASETS: dict[str, RemoteDataset] = {
    d.name: d
    for d in (
        _dataset(
            "mnist",
            # the yann.lecun.com host refuses scripted downloads; TFDS fetches the same bytes here
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            TFDS.format("mnist") + "; the t10k files also shared/data/SHA256SUMS",
            {
                "train-images-idx3-ubyte.gz": (
                    9912422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                "train-labels-idx1-ubyte.gz": (
                    28881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            },
        ),
        _dataset(
            "fashion-mnist",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            TFDS.format("fashion_mnist"),
            {
                "train-images-idx3-ubyte.gz": (
                    26421880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                "train-labels-idx1-ubyte.gz": (
                    29515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            },
        ),
        _dataset(
            "kmnist",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            TFDS.format("kmnist"),
            {
                "train-images-idx3-ubyte.gz": (
                    18165135,
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                ),
                "train-labels-idx1-ubyte.gz": (
                    29497,
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                ),
                "t10k-images-idx3-ubyte.gz": (
                    3041136,
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    5120,
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                ),
            },
        ),
        _dataset(
            "binarized-mnist",
            "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
            TFDS.format("binarized_mnist"),
            {
                "binarized_mnist_train.amat": (
                    78400000,
                    "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
                ),
                "binarized_mnist_valid.amat": (
                    15680000,
                    "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
                ),
                "binarized_mnist_test.amat": (
                    15680000,
                    "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
                ),
            },
        ),
        _dataset(
            "cifar10",
            "https://www.cs.toronto.edu/~kriz/",
            TFDS.format("cifar10"),
            {
                "cifar-10-binary.tar.gz": (
                    170052171,
                    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                ),
            },
        ),
        _dataset(
            "svhn",
            "http://ufldl.stanford.edu/housenumbers/",
            TFDS.format("svhn_cropped"),
            {
                "train_32x32.mat": (
                    182040794,
                    "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                ),
                "test_32x32.mat": (
                    64275384,
                    "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                ),
            },
        ),
        # The 28x28 Omniglot of Burda et al.'s IWAE (github.com/yburda/iwae, datasets/OMNIGLOT).
        _dataset(
            "omniglot",
            "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/",
            UNVERIFIED,
            {"chardata.mat": (None, None)},
        ),
        # Marlin et al. (2010), the 28x28 split 1 used by the VampPrior and IAF papers.
        _dataset(
            "caltech101-silhouettes",
            "https://people.cs.umass.edu/~marlin/data/",
            UNVERIFIED,
            {"caltech101_silhouettes_28_split1.mat": (None, None)},
        ),
        # Brendan Frey's 1,965 faces of 28x20 pixels, from Sam Roweis's data page.
        _dataset(
            "frey-faces",
            "https://cs.nyu.edu/~roweis/data/",
            UNVERIFIED,
            {"frey_rawface.mat": (None, None)},
        ),
    )
}
"""Every dataset that a bare `--data NAME` downloads, by name."""
