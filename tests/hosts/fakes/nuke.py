"""A test double of Nuke's ``nuke`` module, for the calls the Warped Diffusion plugin makes.

Written from the Nuke Python API reference (learn.foundry.com/nuke/developers): nodes made by
``nuke.nodes.<Class>(**knobs)`` with knobs read by ``node["name"].value()``; ``nuke.execute``
renders a Write node's input over a frame range into real files; a Read node's pixels are the
files of its ``file`` pattern; ``ProgressTask``, ``executeInMainThread``, menus and
``pluginAddPath``. It is stricter than Nuke in one way: touching the node graph from a thread
other than the main thread raises, so the plugin's threading is checked.

Pixels are numpy (H, W, 4) RGBA float32 per frame; files go through ``warpdiff_host.exr``.
Test hooks live in ``fake`` (messages shown, the main-thread queue, cancelling a task).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

import numpy as np

GUI = True
env: dict[str, Any] = {"gui": True}


class _Fake:
    """State and hooks for tests."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, gui: bool = True) -> None:
        global GUI
        GUI = gui
        env["gui"] = gui
        self.nodes: list[Node] = []
        self.selected: list[Node] = []
        self.messages: list[str] = []
        self.main_queue: queue.SimpleQueue = queue.SimpleQueue()
        self.tasks: list[ProgressTask] = []
        self.cancel_tasks_when: Any = None  # callable(task) -> bool, polled by isCancelled
        self.menus: dict[str, Menu] = {}
        self.plugin_paths: list[str] = []
        self.executed: list[tuple[str, int, int]] = []
        self.root = Root()

    def run_main_queue(self, until: Any = None, timeout: float = 60.0) -> None:
        """Run calls queued by executeInMainThread, as Nuke's event loop does, until ``until()``."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                fn, args, kwargs = self.main_queue.get(timeout=0.05)
            except queue.Empty:
                if until is None or until():
                    return
                continue
            fn(*args, **kwargs)
        raise TimeoutError("the main-thread queue did not finish")


fake: _Fake  # made at the end of the module, once Root exists


def _main_thread_only(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what}: the node graph may only be changed in Nuke's main thread")


# -- knobs --------------------------------------------------------------------------------------
class Knob:
    def __init__(self, name: str, label: str = "", value: Any = None) -> None:
        self._name, self._label, self._value = name, label or name, value
        self.node: Node | None = None

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def value(self) -> Any:
        return self._value

    getValue = value

    def setValue(self, value: Any) -> bool:
        _main_thread_only(f"setting knob {self._name}")
        self._value = value
        return True


class String_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: str = "") -> None:
        super().__init__(name, label, value)


class Int_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: int = 0) -> None:
        super().__init__(name, label, value)


class Text_Knob(String_Knob):
    pass


class Boolean_Knob(Knob):
    def __init__(self, name: str, label: str = "", value: bool = False) -> None:
        super().__init__(name, label, value)


# -- nodes --------------------------------------------------------------------------------------
_DEFAULT_KNOBS: dict[str, dict[str, Any]] = {
    "Read": {
        "file": "",
        "first": 1,
        "last": 1,
        "origfirst": 1,
        "origlast": 1,
        "colorspace": "default",
        "raw": False,
        "on_error": "error",
    },
    "Write": {
        "file": "",
        "file_type": "",
        "datatype": "16 bit half",
        "channels": "rgb",
        "raw": False,
        "create_directories": False,
        "colorspace": "default",
    },
}


class Node:
    _counter: dict[str, int] = {}

    def __init__(self, cls: str, **knobs: Any) -> None:
        _main_thread_only(f"creating a {cls} node")
        self._class = cls
        self._inputs: dict[int, Node] = {}
        self._knobs: dict[str, Knob] = {}
        self._x = self._y = 0
        n = Node._counter.get(cls, 0) + 1
        Node._counter[cls] = n
        defaults = {"name": f"{cls}{n}", "label": "", **_DEFAULT_KNOBS.get(cls, {})}
        for name, value in defaults.items():
            self._add(Knob(name, value=value))
        for name, value in knobs.items():
            if name not in self._knobs:
                raise NameError(f"{cls} has no knob named {name}")
            self._knobs[name]._value = value
        fake.nodes.append(self)

    def _add(self, knob: Knob) -> None:
        knob.node = self
        self._knobs[knob.name()] = knob

    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        return self._knobs["name"].value()

    fullName = name

    def setName(self, name: str) -> None:
        _main_thread_only("renaming a node")
        if any(n is not self and n.name() == name for n in fake.nodes):
            raise ValueError(f"a node named {name} exists")
        self._knobs["name"]._value = name

    def __getitem__(self, name: str) -> Knob:
        if name not in self._knobs:
            raise NameError(f"{self.name()} has no knob named {name}")
        return self._knobs[name]

    def knob(self, name: str) -> Knob | None:
        return self._knobs.get(name)

    def knobs(self) -> dict[str, Knob]:
        return dict(self._knobs)

    def addKnob(self, knob: Knob) -> None:
        _main_thread_only("adding a knob")
        self._add(knob)

    def input(self, i: int) -> Node | None:
        return self._inputs.get(i)

    def inputs(self) -> int:
        return len(self._inputs)

    def setInput(self, i: int, node: Node | None) -> bool:
        _main_thread_only("connecting nodes")
        if node is None:
            self._inputs.pop(i, None)
        else:
            self._inputs[i] = node
        return True

    def xpos(self) -> int:
        return self._x

    def ypos(self) -> int:
        return self._y

    def setXYpos(self, x: int, y: int) -> None:
        _main_thread_only("moving a node")
        self._x, self._y = int(x), int(y)

    def screenWidth(self) -> int:
        return 80

    def screenHeight(self) -> int:
        return 18

    def setSelected(self, selected: bool) -> None:
        if selected and self not in fake.selected:
            fake.selected.append(self)
        elif not selected and self in fake.selected:
            fake.selected.remove(self)

    def isSelected(self) -> bool:
        return self in fake.selected

    def firstFrame(self) -> int:
        if self._class == "Read":
            return int(self["first"].value())
        up = self.input(0)
        return up.firstFrame() if up else int(fake.root["first_frame"].value())

    def lastFrame(self) -> int:
        if self._class == "Read":
            return int(self["last"].value())
        up = self.input(0)
        return up.lastFrame() if up else int(fake.root["last_frame"].value())

    # the fake's pixel engine: RGBA per frame
    def _pixels(self, frame: int) -> np.ndarray:
        if self._class == "Read":
            return self._read(frame)
        up = self.input(0)
        if up is None:
            raise RuntimeError(f"{self.name()}: no input connected")
        return up._pixels(frame)

    def _read(self, frame: int) -> np.ndarray:
        first, last = int(self["first"].value()), int(self["last"].value())
        from warpdiff_host.exr import frame_file, read_exr  # our IO, imported when used

        frame = min(max(frame, first), last)  # Nuke holds the first/last frame outside
        image = read_exr(frame_file(self["file"].value(), frame))
        h, w, c = image.shape
        rgba = np.zeros((h, w, 4), np.float32)
        if c == 1:
            rgba[..., 3] = image[..., 0]
        else:
            rgba[..., :c] = image
        return rgba

    def __repr__(self) -> str:
        return f"<{self._class} {self.name()}>"


class Root(Node):
    def __init__(self) -> None:
        self._class, self._inputs, self._knobs, self._x, self._y = "Root", {}, {}, 0, 0
        for name, value in {"name": "", "first_frame": 1, "last_frame": 100, "fps": 24.0}.items():
            self._add(Knob(name, value=value))


class _NodeFactory:
    def __getattr__(self, cls: str) -> Any:
        return lambda **knobs: Node(cls, **knobs)


nodes = _NodeFactory()


def createNode(cls: str, knobs: str = "", inpanel: bool = True) -> Node:
    node = Node(cls)
    if fake.selected:
        node.setInput(0, fake.selected[-1])
    return node


def root() -> Root:
    return fake.root


def allNodes(filter: str | None = None) -> list[Node]:
    return [n for n in fake.nodes if filter is None or n.Class() == filter]


def toNode(name: str) -> Node | None:
    return next((n for n in fake.nodes if n.name() == name), None)


def selectedNodes() -> list[Node]:
    return list(fake.selected)


def selectedNode() -> Node:
    if not fake.selected:
        raise ValueError("no node selected")
    return fake.selected[-1]


def delete(node: Node) -> None:
    _main_thread_only("deleting a node")
    fake.nodes.remove(node)
    node.setSelected(False)
    for other in fake.nodes:
        for i, up in list(other._inputs.items()):
            if up is node:
                del other._inputs[i]


_CHANNELS = {"rgb": [0, 1, 2], "rgba": [0, 1, 2, 3], "alpha": [3]}


def execute(
    node: Node | str,
    start: int | None = None,
    end: int | None = None,
    incr: int = 1,
    views: Any = None,
    continueOnError: bool = False,
) -> None:
    """Render a Write node's input for frames start..end into its file pattern."""
    _main_thread_only("nuke.execute")
    from warpdiff_host.exr import frame_file, write_exr

    node = toNode(node) if isinstance(node, str) else node
    if node is None or node.Class() != "Write":
        raise RuntimeError(f"{node}: only Write nodes can be executed")
    start = fake.root["first_frame"].value() if start is None else start
    end = fake.root["last_frame"].value() if end is None else end
    file_type = node["file_type"].value() or os.path.splitext(node["file"].value())[1][1:]
    if file_type != "exr" or node["datatype"].value() != "32 bit float":
        raise RuntimeError("this fake writes 32-bit float EXR only")
    channels = _CHANNELS[node["channels"].value()]
    for frame in range(int(start), int(end) + 1, int(incr)):
        path = frame_file(node["file"].value(), frame)
        if not path.parent.is_dir() and not node["create_directories"].value():
            raise RuntimeError(f"{path.parent}: no such folder")
        write_exr(path, node._pixels(frame)[..., channels])
    fake.executed.append((node.name(), int(start), int(end)))


# -- threads, progress, messages -----------------------------------------------------------------
def executeInMainThread(call: Any, args: tuple = (), kwargs: dict | None = None) -> None:
    fake.main_queue.put((call, tuple(args), dict(kwargs or {})))


def executeInMainThreadWithResult(call: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
    if threading.current_thread() is threading.main_thread():
        return call(*args, **(kwargs or {}))
    done, box = threading.Event(), {}

    def run() -> None:
        box["value"] = call(*args, **(kwargs or {}))
        done.set()

    executeInMainThread(run)
    done.wait()
    return box["value"]


class ProgressTask:
    def __init__(self, name: str) -> None:
        self.name, self.progress, self.messages = name, 0, []
        fake.tasks.append(self)

    def setProgress(self, i: int) -> None:
        if not 0 <= int(i) <= 100:
            raise ValueError(f"progress {i} out of 0..100")
        self.progress = int(i)

    def setMessage(self, s: str) -> None:
        self.messages.append(str(s))

    def isCancelled(self) -> bool:
        return bool(fake.cancel_tasks_when and fake.cancel_tasks_when(self))


def message(text: str) -> None:
    _main_thread_only("nuke.message")
    fake.messages.append(text)


# -- menus and plugin paths ----------------------------------------------------------------------
class Menu:
    def __init__(self, name: str) -> None:
        self._name, self.items = name, {}

    def name(self) -> str:
        return self._name

    def addMenu(self, name: str, icon: str = "", **kwargs: Any) -> Menu:
        return self.items.setdefault(name, Menu(name))

    def addCommand(self, name: str, command: Any = None, shortcut: str = "", **kwargs: Any) -> Any:
        self.items[name] = command
        return command

    def findItem(self, name: str) -> Any:
        return self.items.get(name)


def menu(name: str) -> Menu:
    return fake.menus.setdefault(name, Menu(name))


def toolbar(name: str) -> Menu:
    return fake.menus.setdefault(f"toolbar:{name}", Menu(name))


def pluginAddPath(path: str, addToSysPath: bool = True) -> None:
    fake.plugin_paths.append(path)
    if addToSysPath and path not in sys.path:
        sys.path.insert(0, path)


fake = _Fake()
