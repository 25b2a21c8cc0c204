"""What a user watches while it runs: a bar per pass over the data, and the epoch table.

    learn.fit(1e-2, 3, cycle_len=1)   # a bar "epoch 2/3 ... loss 0.1234", then one table row per epoch

In Jupyter with ipywidgets the bar is a live widget and the table an HTML table that grows as
epochs finish (as fastai users know them); in Jupyter without ipywidgets the bar is text; in a
terminal the bar is text and the table is printed; in a log file (no terminal) only the table.
Display is all here, so the training loop only says what to show and when.
"""
from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ['in_notebook', 'has_widgets', 'progress_bar', 'EpochTable', 'format_row', 'print_table_row']


def in_notebook() -> bool:
    """Is this a Jupyter kernel (not a terminal IPython, not plain Python)?"""
    shell = getattr(sys.modules.get('IPython'), 'get_ipython', lambda: None)()
    return type(shell).__name__ == 'ZMQInteractiveShell'


def has_widgets() -> bool:
    """Can tqdm draw a widget bar (ipywidgets, from the `notebook` extra, is importable)?"""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress_bar(iterable: Iterable, total: int | None = None, desc: str = '', *,
                 quiet: bool = False) -> Any:
    """A tqdm bar over `iterable`, removed when done; `bar.set_postfix_str('loss 0.12')` adds
    to it. A widget in Jupyter with ipywidgets, text in Jupyter without it or in a terminal,
    nothing when `quiet` or when stderr is a file (a log should not fill with redraws)."""
    from tqdm import tqdm
    if quiet:
        return tqdm(iterable, total=total, disable=True)
    if in_notebook():
        if has_widgets():
            from tqdm.notebook import tqdm as tqdm_notebook
            try:
                return tqdm_notebook(iterable, total=total, desc=desc, leave=False)
            except ImportError:  # tqdm.notebook was imported before ipywidgets was installed
                pass
        # The notebook redraws a text line in place on '\r', though its stderr is no terminal.
        return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, disable=False)
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())


def format_row(values: Sequence) -> list[str]:
    """The epoch table's cells: integers as they are, floats to 6 decimals, the rest as str."""
    return [f'{v:d}' if isinstance(v, int) else f'{v:.6f}' if isinstance(v, float) else str(v)
            for v in values]


def print_table_row(values: Sequence, header: Sequence[str] | None = None) -> None:
    """One line of the epoch table; `header` is printed first when given."""
    if header is not None:
        print(''.join(f'{h:<12}' for h in header))
    print(''.join(f'{c:<12}' for c in format_row(values)).rstrip())


class EpochTable:
    """The epoch table: one row per epoch, printed as text, or in Jupyter one HTML table that
    is redrawn in place as rows arrive.

        table = EpochTable(['epoch', 'trn_loss', 'val_loss', 'accuracy', 'time'])
        table.add([0, 0.31, 0.25, 0.91, '1.2s'])

    A `title` is the line above the header (how many processes train, when several do).
    """

    def __init__(self, names: Sequence[str], *, quiet: bool = False, title: str | None = None) -> None:
        self.names, self.quiet, self.title = list(names), quiet, title
        self.rows: list[list[str]] = []
        self._handle: Any = None

    def add(self, values: Sequence) -> None:
        """Append a row and show it (nothing when quiet)."""
        self.rows.append(format_row(values))
        if self.quiet:
            return
        if not in_notebook():
            if self.title and len(self.rows) == 1:
                print(self.title)
            print_table_row(values, self.names if len(self.rows) == 1 else None)
            return
        from IPython.display import display
        if self._handle is None:
            self._handle = display(self, display_id=True)
        else:
            self._handle.update(self)

    def _repr_html_(self) -> str:
        head = ''.join(f'<th>{html.escape(n)}</th>' for n in self.names)
        body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>'
                       for row in self.rows)
        caption = f'<caption>{html.escape(self.title)}</caption>' if self.title else ''
        return (f'<table border="1" class="dataframe">{caption}<thead><tr style="text-align: left;">{head}'
                f'</tr></thead><tbody>{body}</tbody></table>')

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        lines += [''.join(f'{h:<12}' for h in self.names)]
        lines += [''.join(f'{c:<12}' for c in row).rstrip() for row in self.rows]
        return '\n'.join(lines)
