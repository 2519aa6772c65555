"""The names ``model.arch`` accepts, checked without building anything: a catalogued name
(fgvc/models/catalog.py) without importing timm; any timm architecture, with a pretrained tag
(``arch.tag``) or as ``hf-hub:org/repo``; ``pretrainedmodels:<name>`` for Cadene's networks
where that package is installed. timm is imported only for a name the catalogue does not list.
"""

from __future__ import annotations

from fgvc.errors import UsageError
from fgvc.models.catalog import is_listed
from fgvc.suggest import did_you_mean

CADENE_PREFIX = "pretrainedmodels:"
HF_PREFIX = "hf-hub:"


def refusal(name: str) -> str | None:
    """None for a name ``model.arch`` accepts; otherwise the one-line refusal, with "did you
    mean" for an unknown name."""
    if is_listed(name):
        return None
    problem = arch_problem(name)
    if problem is None:
        return None
    if problem.startswith("unknown model"):
        problem += did_you_mean(name, known_arch_names())
    return (f"{problem} (a timm name such as 'resnet50', 'arch.tag', 'hf-hub:org/repo', or "
            "'pretrainedmodels:<name>'; see `fgvc models list`)")


def check_names(names: list[str]) -> None:
    """Refuse, in one line, a name ``model.arch`` would refuse (with "did you mean")."""
    for name in names:
        problem = refusal(name)
        if problem is not None:
            raise UsageError(problem)


def is_known_arch(name: str) -> bool:
    return arch_problem(name) is None


def arch_problem(name: str) -> str | None:
    """None for a usable name; otherwise why not, in one line."""
    if name.startswith(CADENE_PREFIX):
        if name[len(CADENE_PREFIX):] in _cadene_names():
            return None
        return f"unknown Cadene model {name!r}"
    if name.startswith(HF_PREFIX):
        repo = name[len(HF_PREFIX):]
        if repo.count("/") == 1 and all(repo.split("/")):
            return None
        return f"{name!r} is not of the form hf-hub:<organisation>/<repository>"
    import timm

    from fgvc.models import zoo  # noqa: F401  (registers fgvc's own architectures with timm)

    if not timm.is_model(name):
        return f"unknown model {name!r}"
    if "." in name:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError:
            arch = name.split(".")[0]
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(arch + ".*")]
            return (f"{arch!r} has no pretrained tag {name.split('.', 1)[1]!r} (tags: "
                    f"{', '.join(tags) or 'none'})")
    return None


def known_arch_names() -> list[str]:
    """Every name ``model.arch`` accepts, for "did you mean" on a misspelt one."""
    import timm

    from fgvc.models import zoo  # noqa: F401

    return list(timm.list_models()) + [CADENE_PREFIX + n for n in _cadene_names()]


def _cadene_names() -> list[str]:
    try:
        import pretrainedmodels
    except ImportError:
        return []
    return list(pretrainedmodels.model_names)
