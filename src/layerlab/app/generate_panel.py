"""The Generate panel: a prompt, how many tokens, temperature and seed; the continuation
appears token by token, each coloured by the probability the model gave it (its tooltip says
the number), and a table lists them. Only draws: generation runs in the torch thread
(app/generate_ops.py)."""

from __future__ import annotations

import math
import time
from html import escape

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFontDatabase,
    QHelpEvent,
    QKeySequence,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.naming import named

MAX_TOKENS = 2000
# Tokens that come faster than this are shown together: the text is laid out once per batch,
# not once per token (2,000 tokens took the GUI thread 25 s one by one, 0.4 s so).
SHOW_EVERY_S = 0.025
SHOWN = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # characters one cannot see, drawn


def shown(text: str) -> str:
    """A token as the table shows it: blanks and line breaks visible."""
    return "".join(SHOWN.get(c, c) for c in text)


def probability_colour(p: float) -> QColor:
    """Red (unlikely) through yellow to green (likely), light enough to read text on."""
    return QColor.fromHsvF(max(0.0, min(1.0, p)) / 3, 0.35, 1.0)


class TokenText(QTextBrowser):
    """The prompt, then each token on its probability's colour; hovering a token tells its
    probability."""

    def __init__(self) -> None:
        super().__init__()
        self.setOpenLinks(False)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(font.pointSizeF() * 1.4)
        self.setFont(font)
        self.tips: list[str] = []

    def begin(self, prompt: str) -> None:
        self.tips = []
        self.setHtml(f"<span style='color:#555'>{self._html(prompt)}</span>")

    def add(self, tokens: list[tuple[str, float]]) -> None:
        """Tokens and their probabilities at the end, in one edit (one layout)."""
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for text, p in tokens:
            look = QTextCharFormat()
            look.setAnchor(True)
            look.setAnchorHref(f"token:{len(self.tips)}")
            look.setForeground(QColor("black"))
            look.setBackground(probability_colour(p))
            cursor.insertText(text, look)
            self.tips.append(f"{shown(text)!r}: probability {p:.3f}")
        cursor.endEditBlock()
        self.moveCursor(QTextCursor.MoveOperation.End)  # the newest token in view

    @staticmethod
    def _html(text: str) -> str:
        return escape(text, quote=False).replace("\n", "<br>").replace(" ", "&nbsp;")

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            anchor = self.anchorAt(event.pos())
            if anchor.startswith("token:"):
                QToolTip.showText(event.globalPos(), self.tips[int(anchor[6:])], self)
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)


class GeneratePanel(QWidget):
    """Asks for a generation (`requested`) and shows what the torch thread sends back."""

    requested = Signal(str, int, float, int)  # prompt, tokens, temperature, seed
    stopRequested = Signal()  # the person wants the generation under way to stop

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("generatePanel")
        self.setAccessibleName("Generate")
        self.prompt = named(QLineEdit(), "generatePrompt", "Prompt",
                                  "The text the model continues, in its dataset's "
                                  "characters (Enter generates)")
        self.prompt.setPlaceholderText("e.g. 38+47=")
        self.prompt.returnPressed.connect(self.ask)
        self.tokens = named(QSpinBox(), "generateTokens", "Tokens",
                                  "How many tokens to write after the prompt")
        self.tokens.setRange(1, MAX_TOKENS)
        self.tokens.setValue(10)
        self.temperature = named(QDoubleSpinBox(), "generateTemperature", "Temperature",
                                       "0: the most likely token each time; above 0: drawn "
                                       "from softmax(scores / temperature)")
        self.temperature.setRange(0.0, 10.0)
        self.temperature.setSingleStep(0.1)
        self.seed = named(QSpinBox(), "generateSeed", "Seed",
                                "Seed of the draws: the same seed writes the same text")
        self.seed.setRange(0, 2**31 - 1)
        self.button = named(QPushButton("Generate"), "generateButton", "Generate",
                                  "Continue the prompt with the current weights (Enter)")
        self.button.clicked.connect(self.ask)
        self.stop = named(QPushButton("Stop"), "generateStop", "Stop generating",
                                "Stop writing; the tokens written so far stay (Esc)")
        self.stop.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        self.stop.setEnabled(False)
        self.stop.clicked.connect(self.stopRequested)
        self.message = named(QLabel(), "generateMessage", "Generation message", "")
        self.message.setWordWrap(True)
        self.text = named(TokenText(), "generateOutput", "Continuation",
                                "The prompt (grey) and each token written, coloured by its "
                                "probability: green likely, red unlikely")
        self.table = named(QTableWidget(0, 2), "generateTable", "Tokens and "
                                 "probabilities", "Each token written and the probability "
                                 "the model gave it")
        self.table.setHorizontalHeaderLabels(["token", "probability"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.dropping = False  # a forgotten generation's tokens are still on their way
        self._pending: list[tuple[str, float]] = []  # tokens come faster than they show
        self._shown_at = 0.0
        self._show_timer = QTimer(self)
        self._show_timer.setSingleShot(True)
        self._show_timer.timeout.connect(self._show_pending)
        self._lay_out()

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("prompt", self.prompt)
        knobs = QHBoxLayout()
        for label, box in (("tokens", self.tokens), ("temperature", self.temperature),
                           ("seed", self.seed)):
            knobs.addWidget(QLabel(label))
            knobs.addWidget(box)
        knobs.addWidget(self.button)
        knobs.addWidget(self.stop)
        knobs.addStretch(1)
        form.addRow(knobs)
        below = QHBoxLayout()
        below.addWidget(self.text, 3)
        below.addWidget(self.table, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addLayout(below, 1)

    def ask(self) -> None:
        if self.button.isEnabled():
            self.requested.emit(self.prompt.text(), self.tokens.value(),
                                self.temperature.value(), self.seed.value())

    # -- what the torch thread sends back ---------------------------------------------
    def _writing(self, writing: bool) -> None:
        self.button.setEnabled(not writing)
        self.stop.setEnabled(writing)

    def forget(self) -> None:
        """Another project: the old continuation goes, and what is still on its way from
        a generation under way (stopped by the caller) is dropped."""
        self.dropping = self.stop.isEnabled()
        self._drop_pending()
        self.message.clear()
        self.text.clear()
        self.table.setRowCount(0)

    def begin(self, prompt: str) -> None:
        self.dropping = False
        self._drop_pending()
        self._writing(True)
        self.message.setText("Generating…")
        self.text.begin(prompt)
        self.table.setRowCount(0)

    def add_token(self, text: str, p: float) -> None:
        """Shown at once, unless the last tokens finished showing less than SHOW_EVERY_S
        ago: then with the others that come meanwhile (the pause counts from the end of a
        show, so the GUI thread is free for it however long a long text takes to lay out)."""
        if self.dropping:
            return
        self._pending.append((text, p))
        if self._show_timer.isActive():
            return
        wait = SHOW_EVERY_S - (time.perf_counter() - self._shown_at)
        if wait > 0:
            self._show_timer.start(math.ceil(1000 * wait))
        else:
            self._show_pending()

    def _show_pending(self) -> None:
        self._show_timer.stop()
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.text.add(batch)
        first = self.table.rowCount()
        self.table.setRowCount(first + len(batch))
        for row, (text, p) in enumerate(batch, start=first):
            for column, value in enumerate((shown(text), f"{p:.3f}")):
                item = QTableWidgetItem(value)
                item.setToolTip(f"{text!r}: probability {p:.6f}")
                item.setBackground(probability_colour(p))
                item.setForeground(QColor("black"))
                item.setData(Qt.ItemDataRole.UserRole, p)
                self.table.setItem(row, column, item)
        self.table.scrollToBottom()
        self._shown_at = time.perf_counter()

    def _drop_pending(self) -> None:
        self._show_timer.stop()
        self._pending = []

    def finish(self, summary: str) -> None:
        self._show_pending()
        self._writing(False)
        if not self.dropping:
            self.message.setText(summary)
        self.dropping = False

    def refuse(self, message: str) -> None:
        self._show_pending()  # what was written before the problem stays
        self._writing(False)
        if self.dropping:
            self.dropping = False
            return
        self.message.setText(message)
        if not self.table.rowCount():  # nothing was written: no prompt left as if it were
            self.text.clear()

    def written(self) -> list[tuple[str, float]]:
        """The table's rows: each token as shown, and its probability."""
        return [(self.table.item(r, 0).text(),
                 float(self.table.item(r, 1).data(Qt.ItemDataRole.UserRole)))
                for r in range(self.table.rowCount())]

