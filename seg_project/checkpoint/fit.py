"""Do a checkpoint's class-dependent layers fit a config? Checks with errors that say what the
file holds and what the config asks for."""

from typing import Dict, Mapping, Tuple

from ..utils.errors import WeightsError

__all__ = [
    "PREDICTOR_LAYERS",
    "check_predictors",
    "classes_phrase",
    "config_asks",
    "layer_name",
    "predictor_outputs",
    "strip_module_prefix",
]

# The layers whose shapes depend on the number of classes (StandardROIHeads of Mask R-CNN).
CLS_SCORE = "roi_heads.box_predictor.cls_score"
BBOX_PRED = "roi_heads.box_predictor.bbox_pred"
MASK_PREDICTOR = "roi_heads.mask_head.predictor"
PREDICTOR_LAYERS = (CLS_SCORE, BBOX_PRED, MASK_PREDICTOR)


def strip_module_prefix(state: Mapping) -> Dict:
    """A state dict without the ``module.`` prefix that DistributedDataParallel adds."""
    if state and all(str(k).startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _shape(value) -> Tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def classes_phrase(k) -> str:
    """A model of ``k`` classes in words: "a 4-class model", "an 80-class model"."""
    text = str(k)
    return f"{'an' if text.startswith('8') or text in ('11', '18') else 'a'} {text}-class model"


def layer_name(key: str) -> str:
    """The layer of a state-dict key ("roi_heads.box_predictor.cls_score.weight" -> its
    layer, without ".weight")."""
    return key.rsplit(".", 1)[0] if "." in key else key


def predictor_outputs(cfg) -> Dict[str, int]:
    """The output sizes that ``cfg``'s class count gives the predictor layers.

    Returns:
        dict: ``{"<layer>.weight": outputs}`` for the box classifier (K + 1), the box
        regressor (4 K, or 4 class-agnostic) and, with ``MODEL.MASK_ON``, the mask predictor
        (K, or 1 class-agnostic); empty for ROI heads other than ``StandardROIHeads``.
    """
    if cfg.MODEL.ROI_HEADS.NAME != "StandardROIHeads":
        return {}
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    box_dim = len(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
    outputs = {
        f"{CLS_SCORE}.weight": k + 1,
        f"{BBOX_PRED}.weight": box_dim * (1 if cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
                                          else k),
    }
    if cfg.MODEL.MASK_ON:
        outputs[f"{MASK_PREDICTOR}.weight"] = 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else k
    return outputs


def config_asks(cfg) -> str:
    """What ``cfg`` asks of a model, for error messages: its class count and names."""
    names = ", ".join(cfg.DATASETS.CELLS.CLASS_NAMES)
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    return (f"{classes_phrase(k)} (MODEL.ROI_HEADS.NUM_CLASSES {k}; "
            f"DATASETS.CELLS.CLASS_NAMES {names})")


def _describe_held(state: Mapping) -> str:
    cls = state.get(f"{CLS_SCORE}.weight")
    if cls is None:
        return f"no box predictor ({CLS_SCORE})"
    return classes_phrase(_shape(cls)[0] - 1)


def check_predictors(state: Mapping, expected: Mapping[str, object], path: str,
                     asks: str) -> None:
    """Check that a checkpoint's predictor layers fit a model.

    Args:
        state: the checkpoint's model state dict.
        expected: ``{"<layer>.weight": outputs (int) or the full shape (tuple)}``.
        path: the checkpoint, named in the error.
        asks: what the config asks for (see :func:`config_asks`).

    Raises:
        WeightsError: a predictor layer is missing or of another size; the message names the
            file, what it holds and what the config asks for.
    """
    state = strip_module_prefix(state)
    problems = []
    for key, want in expected.items():
        layer = layer_name(key)
        if key not in state:
            problems.append(f"{layer} is missing")
            continue
        have = _shape(state[key])
        if isinstance(want, tuple):
            if have[:1] != want[:1] and have[1:] == want[1:]:
                problems.append(f"{layer} has {have[0]} outputs, the model needs {want[0]}")
            elif have != want:
                problems.append(f"{layer} has shape {list(have)}, the model needs {list(want)}")
        elif not have or have[0] != want:
            problems.append(f"{layer} has {have[0] if have else 0} outputs, the model needs "
                            f"{want}")
    if not problems:
        return
    cls_key = f"{CLS_SCORE}.weight"
    want_cls = expected.get(cls_key)
    want_cls = want_cls[0] if isinstance(want_cls, tuple) else want_cls
    if cls_key in state and _shape(state[cls_key])[:1] == (want_cls,):
        # The class count fits; another head does not (e.g. no mask predictor).
        what = f"does not fit the config's model, {asks}"
    else:
        what = f"holds {_describe_held(state)}, but the config asks for {asks}"
    raise WeightsError(path, f"{what}: {'; '.join(problems)}. Use the config the weights were "
                             "trained with (the run folder's config.yaml)")
