"""What the user watches: the bar in a terminal, in Jupyter with and without ipywidgets, and the
epoch table as text or as a live HTML table."""
from __future__ import annotations

import sys

import pytest

import fastlearn.progress as progress
from fastlearn.progress import EpochTable, format_row, has_widgets, print_table_row, progress_bar


@pytest.fixture
def no_widgets(monkeypatch):
    """Jupyter without ipywidgets, whether or not this environment has it."""
    monkeypatch.setattr(progress, 'in_notebook', lambda: True)
    monkeypatch.setitem(sys.modules, 'ipywidgets', None)  # `import ipywidgets` raises ImportError


def test_quiet_and_a_log_file_get_no_bar(capsys):
    assert list(progress_bar(range(3), 3, 'epoch 1/1', quiet=True)) == [0, 1, 2]
    bar = progress_bar(range(2), 2, 'epoch 1/1')  # pytest's stderr is no terminal
    bar.set_postfix_str('loss 0.5', refresh=False)
    assert list(bar) == [0, 1]
    assert capsys.readouterr().err == ''


def test_progress_bar_falls_back_to_text_without_ipywidgets(no_widgets, capsys):
    assert not has_widgets()
    bar = progress_bar(range(3), 3, 'epoch 2/7')
    assert type(bar).__module__ == 'tqdm.std'  # text, not tqdm.notebook's widget
    for _ in bar:
        bar.set_postfix_str('loss 0.1234')
    err = capsys.readouterr().err
    assert 'epoch 2/7' in err and '/3 [' in err and 'loss 0.1234' in err


def test_progress_bar_is_a_widget_with_ipywidgets(monkeypatch):
    pytest.importorskip('ipywidgets')
    monkeypatch.delitem(sys.modules, 'tqdm.notebook', raising=False)  # imported afresh, widgets seen
    from tqdm.notebook import tqdm as tqdm_notebook
    monkeypatch.setattr(progress, 'in_notebook', lambda: True)
    assert has_widgets()
    bar = progress_bar(range(4), 4, 'epoch 1/3')
    assert isinstance(bar, tqdm_notebook)
    assert list(bar) == [0, 1, 2, 3] and bar.n == 4 and bar.desc == 'epoch 1/3'


def test_format_row_and_text_table(capsys):
    assert format_row([3, 0.25, 'x', 1.0]) == ['3', '0.250000', 'x', '1.000000']
    table = EpochTable(['epoch', 'trn_loss', 'time'])
    table.add([0, 0.5, '1.0s'])
    table.add([1, 0.25, '0.9s'])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split() for ln in lines] == [['epoch', 'trn_loss', 'time'], ['0', '0.500000', '1.0s'],
                                            ['1', '0.250000', '0.9s']]
    print_table_row([1, 0.25, '0.9s'])
    assert capsys.readouterr().out.rstrip('\n') == lines[2] == repr(table).splitlines()[2]
    EpochTable(['epoch'], quiet=True).add([0])
    assert capsys.readouterr().out == ''


def test_notebook_table_is_html_redrawn_in_place(monkeypatch, capsys):
    pytest.importorskip('IPython')
    import IPython.display
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(('update', obj._repr_html_()))

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(('display', obj._repr_html_()))
        return Handle()

    monkeypatch.setattr(progress, 'in_notebook', lambda: True)
    monkeypatch.setattr(IPython.display, 'display', display)
    table = EpochTable(['epoch', 'val_loss', 'accuracy<'])
    table.add([0, 0.5, 0.75])
    table.add([1, 0.25, 0.875])
    assert [kind for kind, _ in shown] == ['display', 'update']
    html = shown[-1][1]
    assert html.startswith('<table') and '<th>accuracy&lt;</th>' in html
    assert html.count('<tr>') == 2 and '<td>0.875000</td>' in html
    assert capsys.readouterr().out == ''  # no text table beside the HTML one
