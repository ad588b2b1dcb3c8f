"""The settings form of the Workspace > Scripts entry: Resolve's UIManager, else Qt.

Both forms ask the same things (task, matte file or the clip's alpha, send as paths or
frames, output EXR/mov/mp4, place on the track above, steps and seed) and give a
:class:`Settings`, or None when cancelled. Without either toolkit the defaults are used.
"""

from __future__ import annotations

from typing import Any

from warpdiff_resolve.workflow import OUTPUTS, SENDS, Settings

TASKS = ("inpaint", "upscale")


def from_answers(answers: dict[str, Any]) -> Settings:
    """Form answers (strings, as widgets give them) -> Settings; empty fields keep defaults."""
    params: dict[str, Any] = {}
    for key in ("steps", "seed"):
        text = str(answers.get(key) or "").strip()
        if text:
            params[key] = int(text)
    matte = str(answers.get("matte") or "").strip() or None
    return Settings(
        task=str(answers.get("task") or "inpaint"),
        matte=matte,
        send=str(answers.get("send") or "auto"),
        output=str(answers.get("output") or "exr"),
        place_on_track=bool(answers.get("place", True)),
        params=params,
    )


def ask(fusion: Any = None, bmd: Any = None) -> Settings | None:
    if fusion is not None and bmd is not None:
        return _ask_uimanager(fusion, bmd)
    try:
        return _ask_qt()
    except ImportError:
        return Settings()


def _ask_uimanager(fusion: Any, bmd: Any) -> Settings | None:
    ui = fusion.UIManager
    disp = bmd.UIDispatcher(ui)

    def combo(name: str) -> Any:
        return ui.ComboBox({"ID": name})

    win = disp.AddWindow(
        {"ID": "WarpDiff", "WindowTitle": "Warped Diffusion", "Geometry": [200, 200, 420, 260]},
        ui.VGroup(
            [
                ui.HGroup([ui.Label({"Text": "Task"}), combo("task")]),
                ui.HGroup(
                    [
                        ui.Label({"Text": "Matte file (empty: clip alpha)"}),
                        ui.LineEdit({"ID": "matte"}),
                    ]
                ),
                ui.HGroup([ui.Label({"Text": "Send"}), combo("send")]),
                ui.HGroup([ui.Label({"Text": "Output"}), combo("output")]),
                ui.HGroup(
                    [
                        ui.Label({"Text": "Steps"}),
                        ui.LineEdit({"ID": "steps"}),
                        ui.Label({"Text": "Seed"}),
                        ui.LineEdit({"ID": "seed", "Text": "0"}),
                    ]
                ),
                ui.CheckBox({"ID": "place", "Text": "Place on the track above", "Checked": True}),
                ui.HGroup(
                    [
                        ui.Button({"ID": "ok", "Text": "Run"}),
                        ui.Button({"ID": "cancel", "Text": "Cancel"}),
                    ]
                ),
            ]
        ),
    )
    items = win.GetItems()
    for name, values in (("task", TASKS), ("send", SENDS), ("output", OUTPUTS)):
        for value in values:
            items[name].AddItem(value)
    answers: dict[str, Any] = {}

    def done(ev: Any, ok: bool) -> None:
        if ok:
            answers.update({n: items[n].CurrentText for n in ("task", "send", "output")})
            answers.update({n: items[n].Text for n in ("matte", "steps", "seed")})
            answers["place"] = items["place"].Checked
        disp.ExitLoop()

    win.On.ok.Clicked = lambda ev: done(ev, True)
    win.On.cancel.Clicked = lambda ev: done(ev, False)
    win.On.WarpDiff.Close = lambda ev: done(ev, False)
    win.Show()
    disp.RunLoop()
    win.Hide()
    return from_answers(answers) if answers else None


def _ask_qt() -> Settings | None:
    try:
        from PySide6 import QtWidgets
    except ImportError:
        from PySide2 import QtWidgets  # Resolve's older bundled Qt bindings

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    dialog = QtWidgets.QDialog()
    dialog.setWindowTitle("Warped Diffusion")
    form = QtWidgets.QFormLayout(dialog)
    boxes = {}
    for name, values in (("task", TASKS), ("send", SENDS), ("output", OUTPUTS)):
        boxes[name] = QtWidgets.QComboBox()
        boxes[name].addItems(list(values))
        form.addRow(name.capitalize(), boxes[name])
    edits = {n: QtWidgets.QLineEdit() for n in ("matte", "steps", "seed")}
    edits["matte"].setPlaceholderText("empty: the clip's alpha")
    for name, edit in edits.items():
        form.addRow(name.capitalize(), edit)
    place = QtWidgets.QCheckBox("Place on the track above")
    place.setChecked(True)
    form.addRow(place)
    buttons = QtWidgets.QDialogButtonBox(
        QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel
    )
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    if not dialog.exec():
        return None
    del app
    answers = {n: b.currentText() for n, b in boxes.items()}
    answers.update({n: e.text() for n, e in edits.items()})
    answers["place"] = place.isChecked()
    return from_answers(answers)
