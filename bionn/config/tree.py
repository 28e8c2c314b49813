"""The composed config as a tree, printed when a run starts (as lightning-hydra-template does)."""

from __future__ import annotations

from typing import IO, Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def config_tree(cfg: Any, resolve: bool = True):
    """A rich Tree: one branch per top-level group (model, dataset, training, runtime), its YAML inside."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(f"[bold]{key}[/bold]")
        if isinstance(value, (DictConfig, ListConfig)):
            text = OmegaConf.to_yaml(value, resolve=resolve).rstrip()
            branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default", word_wrap=True))
        else:
            branch.add(str(value))
    return tree


def print_config_tree(cfg: Any, file: IO[str] | None = None) -> None:
    """Print the tree to stdout (or file); colours only on a terminal, plain text in logs."""
    from rich.console import Console

    console = Console(file=file, width=120 if file is not None else None, soft_wrap=False)
    console.print(config_tree(cfg))
