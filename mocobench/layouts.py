"""The checkpoint layouts the one reader (:func:`mocobench.checkpoint.load_backbone`) understands, as data.

Each :class:`Layout` says how to recognise a file (where the state dict sits and under which key prefix
the torchvision-named ResNet is), which non-backbone parts the framework saves next to it (dropped,
and listed in ``results.json``), the input normalisation it was trained with, and the source file the
layout was read from. ``--format``, the reader's detection and the README table all read
:data:`LAYOUTS`; nothing else knows a layout. Detection looks only at the structure of the loaded
object, never at file names (see :func:`mocobench.checkpoint.resolve_layout`).

Key names below are after the DDP / torch.compile wrappers (``module.``, ``_orig_mod.``) are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Where:
    """One place a layout keeps its backbone: ``container`` is the dotted path of the state dict inside the
    file ("" = the file is the state dict), ``prefix`` the key prefix of the ResNet in it ("" = none), and
    ``part`` the name ``--part`` selects it by ("" for layouts with one backbone)."""

    container: str
    prefix: str
    part: str = ""


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout.

    ``where``: the places tried, in order (the first matching one of the chosen part is used).
    ``known``: state-dict keys outside the backbone that the framework saves (``name.`` = every key under
    it, else the exact key); they are dropped and reported. Under the backbone prefix, ``fc.*`` (the
    classifier or projection head) is always dropped. ``top``: top-level entries the file must hold (key ->
    required value, or None for any value). ``rename``: a key map to torchvision names (``detectron2``).
    ``stem_key``: the key (after ``prefix``) whose presence marks the layout's backbone.
    ``method``: the pretraining method, or :data:`FROM_FILE` (the file's ``method`` entry) or
    :data:`FROM_HEAD` (supervised when the file keeps its ``fc`` classifier, else unknown).
    ``stem``: the small-image stem variant the framework builds when ``conv1`` is 3x3 ("" = none known, so a
    3x3 ``conv1`` needs ``--stem``), and ``small_normalize`` the input normalisation of that variant where it
    differs. ``refuse``: a layout that is recognised only to be refused, with why. ``auto``: False for a
    layout whose structure is another's (only ``--format`` names it). ``needs_known``: the layout claims a
    file only when one of its known parts is there (its backbone alone looks like another layout's).
    ``caveats``: (key prefix, message)
    logged when a file holds that prefix. ``also``: other sources that save the same structure.
    """

    name: str
    method: str
    source: str
    where: tuple[Where, ...]
    known: tuple[str, ...] = ()
    top: dict[str, object] = field(default_factory=dict)
    rename: str = ""
    normalize: str = "imagenet"
    stem: str = ""
    small_normalize: str = ""
    also: str = ""
    refuse: str = ""
    stem_key: str = "conv1.weight"
    auto: bool = True
    needs_known: bool = False
    caveats: tuple[tuple[str, str], ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w.part for w in self.where if w.part))


FROM_FILE = "from the file"
FROM_HEAD = "from the head"

#: Input normalisations a checkpoint can expect, as (mean, std) applied to RGB in [0, 1]. ``imagenet``:
#: torchvision's (every layout below); ``swav``: the std SwAV, DeepCluster-v2 and SeLa-v2 were trained and
#: evaluated with (facebookresearch/swav @ 06b1b7c, src/multicropdataset.py L38-39, eval_linear.py L104);
#: ``cifar``: solo-learn's CIFAR statistics (solo/data/classification_dataloader.py L52, L83); ``none``: RGB
#: in [0, 1] as is (SimCLR weights converted from TensorFlow).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "swav": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

#: Small-image stems (3x3 ``conv1``, stride 1, no max-pool). The padding differs by framework and is not in
#: the weights, so it is named, never guessed.
STEMS = {
    "small": 1,  # Conv2d(3, 64, 3, 1, 1): mmpretrain backbones/resnet_cifar.py L57-68
    "small_pad2": 2,  # Conv2d(3, 64, 3, 1, 2): solo-learn solo/methods/base.py L198-203
}

_MOCO = "facebookresearch/moco @ 87e36d3"
_MMSELFSUP = ("open-mmlab/mmselfsup @ db861f30 mmselfsup/models/algorithms/base.py L61-67 (backbone, neck, head), "
              "moco.py L65 / byol.py L55 / mocov3.py L55 (EMA copies encoder_k / target_net / momentum_encoder); "
              "open-mmlab/OpenSelfSup @ 1db69ece openselfsup/models/moco.py L42-58 (backbone saved twice, also as "
              "encoder_q.0); mmselfsup 0.x @ 6faad816 (simsiam: encoder, mocov3: base_encoder)")

LAYOUTS: tuple[Layout, ...] = (
    Layout("mocobench", FROM_FILE, "mocobench pretrain (pretrain/engine.py): the official MoCo layout plus format, "
           "method, backbone_prefix, config",
           (Where("state_dict", "encoder_q."), Where("state_dict", "encoder.")),
           known=("encoder_k.", "queue", "queue_ptr", "queue_ids", "bank"), top={"format": "mocobench"}),
    Layout("moco_official", "moco", f"{_MOCO} main_moco.py L374-380 (save), moco/builder.py L41-63 (encoder_q, "
           "encoder_k, queue); main_lincls.py L241-253 keeps encoder_q minus fc",
           (Where("state_dict", "encoder_q.", "query"), Where("state_dict", "encoder_k.", "key")),
           known=("encoder_q.", "encoder_k.", "queue", "queue_ptr")),
    Layout("torchvision", FROM_HEAD, "pytorch/vision torchvision/models/resnet.py (a plain ResNet state dict); "
           "also under state_dict (DenseCL @ b64bbb6, OpenSelfSup/mmselfsup tools/extract_backbone_weights.py)",
           (Where("", ""), Where("state_dict", "")),
           also="timm ResNets (huggingface/pytorch-image-models @ aa4b5850 timm/models/resnet.py), the backbone "
                "files of DINO (dino @ 7c446df utils.py L606), Barlow Twins (barlowtwins @ 8e8d284 main.py L151) and "
                "VICReg (vicreg @ 4e12602 main_vicreg.py L164)"),
    Layout("simclr_converted", "simclr", "tonylins/simclr-converter @ 139d3cb0 convert.py L85 ({'state_dict'}); "
           "inputs RGB in [0, 1] without mean/std (README L21, eval.py L66-72)",
           (Where("state_dict", ""), Where("", "")), normalize="none", auto=False,
           also="the same structure as a torchvision file: only --format simclr_converted names it"),
    Layout("moco_v3", "moco_v3", "facebookresearch/moco-v3 @ c349e6e main_moco.py L310-316 (save), moco/builder.py "
           "L36-52, L99-109 (base_encoder with an MLP fc, momentum_encoder, predictor); main_lincls.py L177-189",
           (Where("state_dict", "base_encoder.", "base"), Where("state_dict", "momentum_encoder.", "momentum")),
           known=("base_encoder.", "momentum_encoder.", "predictor.")),
    Layout("solo_learn", "unknown", "vturrisi/solo-learn @ 9187ea39 solo/methods/base.py L193-210, L643-660 "
           "(backbone, classifier, momentum_*), solo/methods/*.py (projector, predictor, heads, queues); before "
           "0ac7b8f (2021-12) encoder / momentum_encoder; CIFAR stem base.py L198-203 (3x3, padding 2, no max-pool)",
           (Where("state_dict", "backbone."), Where("state_dict", "encoder.")),
           known=("backbone.", "encoder.", "momentum_backbone.", "momentum_encoder.", "classifier.",
                  "momentum_classifier.", "projector.", "momentum_projector.", "predictor.", "head.", "momentum_head.",
                  "prototypes.", "dino_loss_func.", "queue", "queue_y", "queue_ptr", "queue_index",
                  "local_memory_index", "local_memory_embeddings", "whitening.", "transformer_encoder.", "pos_enc."),
           stem="small_pad2", small_normalize="cifar"),
    Layout("lightly", "unknown", "lightly-ai/lightly @ e8d317fc benchmarks/imagenet/resnet50/*.py (backbone, "
           "projection_head, prediction_head, online_classifier; student_/query_/teacher_/key_ copies; "
           "backbone_momentum in tico.py)",
           (Where("state_dict", "backbone.", "backbone"), Where("state_dict", "student_backbone.", "student"),
            Where("state_dict", "query_backbone.", "query"), Where("state_dict", "teacher_backbone.", "teacher"),
            Where("state_dict", "key_backbone.", "key"), Where("state_dict", "backbone_momentum.", "momentum")),
           known=("backbone.", "student_backbone.", "query_backbone.", "teacher_backbone.", "key_backbone.",
                  "backbone_momentum.", "projection_head.", "prediction_head.", "student_projection_head.",
                  "student_prediction_head.", "teacher_projection_head.", "query_projection_head.",
                  "key_projection_head.", "projection_head_momentum.", "online_classifier.", "prototypes.",
                  "criterion."),
           caveats=(("student_backbone.", "in lightly's DINO and its BYOL before 2024-02-22, 'backbone' is the EMA "
                                          "(teacher) network; --part student reads the online one"),
                    ("query_backbone.", "in lightly's MoCo v2 before 2024-02-22, 'backbone' is the key (EMA) encoder; "
                                        "--part query reads the query encoder"))),
    Layout("mmselfsup", "unknown", _MMSELFSUP,
           (Where("state_dict", "backbone."), Where("state_dict", "encoder_q.0.")),
           known=("backbone.", "encoder_q.", "encoder_k.", "online_net.", "target_net.", "momentum_encoder.", "neck.",
                  "head.", "queue", "queue_ptr", "queue2", "queue2_ptr", "loss_weight", "encoder.", "base_encoder."),
           stem="small"),
    Layout("vissl", "unknown", "facebookresearch/vissl @ 09270ed2 vissl/models/trunks/resnext.py L144-157 "
           "(_feature_blocks), base_ssl_model.py L414-417 (classy_state_dict.base_model.model.trunk / heads), "
           "utils/checkpoint.py L963-978 (base_model._feature_blocks), converted files {'model_state_dict'}",
           (Where("classy_state_dict.base_model.model.trunk", "_feature_blocks."),
            Where("model_state_dict", "_feature_blocks."), Where("", "_feature_blocks."),
            Where("", "base_model._feature_blocks."), Where("", "trunk._feature_blocks."))),
    Layout("dino", "dino", "facebookresearch/dino @ 7c446df main_dino.py L278-290 (student, teacher, args), utils.py "
           "L74-80, L606 (MultiCropWrapper: backbone, head); eval_linear.py L264 evaluates the teacher",
           (Where("teacher", "backbone.", "teacher"), Where("student", "backbone.", "student")),
           known=("head.",)),
    Layout("swav", "unknown", "facebookresearch/swav @ 06b1b7c src/resnet50.py L157-217 (projection_head, "
           "prototypes), hubconf.py L27-34; the hub files of SwAV, DeepCluster-v2 and SeLa-v2; std 0.228 for red "
           "(src/multicropdataset.py L38-39)",
           (Where("", ""), Where("state_dict", "")), known=("projection_head.", "prototypes."), normalize="swav",
           needs_known=True),
    Layout("barlowtwins", "unknown", "facebookresearch/barlowtwins @ 8e8d284 main.py L146-148, L191-205 "
           "(checkpoint.pth: model = backbone, projector, bn)",
           (Where("model", "backbone."),), known=("projector.", "bn."),
           also="VICReg's full model.pth (facebookresearch/vicreg @ 4e12602 main_vicreg.py L157-162: backbone, "
                "projector)"),
    Layout("pycontrast", "unknown", "HobbitLong/PyContrast @ 84f94eab learning/contrast_trainer.py L107-128 (model, "
           "model_ema, contrast), networks/util.py L15-32 (head, head_jig); detection/convert_pretrained.py L18-51",
           (Where("model", "encoder.", "model"), Where("model_ema", "encoder.", "ema")),
           known=("head.", "head_jig.")),
    Layout("detectron2", "unknown", "facebookresearch/detectron2 @ 02b5c4e2 tools/convert-torchvision-to-d2.py "
           "L37-54 (model, __author__, matching_heuristics); facebookresearch/moco detection/"
           "convert-pretrain-to-detectron2.py (keeps the head as stem.fc.*)",
           (Where("model", ""),), known=("stem.fc.",), rename="detectron2", stem_key="stem.conv1.weight"),
    Layout("caffe2_msra", "supervised", "detectron2 ImageNetPretrained/MSRA/R-50.pkl (caffe2 names, converted by "
           "detectron2/checkpoint/c2_model_loading.py L9-62; config/defaults.py L39-46, L84)",
           (Where("blobs", ""), Where("", "")), stem_key="conv1_w",
           refuse="MSRA/caffe2 weights take BGR inputs in 0-255 and put the stride in the 1x1 conv; a "
                  "torchvision ResNet computes another function with them. Use torchvision's supervised "
                  "weights (mocobench zoo fetch torchvision_r50) instead"),
)

BY_NAME = {layout.name: layout for layout in LAYOUTS}


def layouts_markdown() -> str:
    """The README's table of layouts, generated from :data:`LAYOUTS` (tests keep the README equal to it)."""

    def places(layout: Layout) -> str:
        return "; ".join(f"`{w.container + ':' if w.container else ''}{w.prefix}*`" + (f" ({w.part})" if w.part else "")
                         for w in layout.where)

    rows = ["| layout | backbone (container:prefix, parts) | dropped when present | inputs | source |",
            "|---|---|---|---|---|"]
    for x in LAYOUTS:
        known = ", ".join(f"`{k}`" for k in x.known if not any(k == w.prefix for w in x.where)) or "—"
        inputs = x.normalize + (f" ({x.stem}: {x.small_normalize})" if x.small_normalize else "")
        notes = (f" Also: {x.also}." if x.also else "") + (f" **Refused**: {x.refuse}." if x.refuse else "") + \
            ("" if x.auto else " Only with `--format`.") + (f" 3x3 stem: `{x.stem}`." if x.stem else "")
        rows.append(f"| `{x.name}` | {places(x)} | {known} | {inputs} | {x.source}.{notes} |")
    return "\n".join(rows)
