"""Chain-rule rules of LSTM and GRU, unrolled in time: the gates at every step, and the
gradient carried back through time (backpropagation through time) by hand.

Stacked layers read the previous layer's output (through the dropout mask the step drew,
when training); a bidirectional layer runs a second cell from the last step to the first
and joins both outputs. The final states are not used by the graph (the compiler keeps
the output sequence), so no gradient enters through them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from layerlab.core.explain_rules import Local, Part, Rule, RuleFn, Tensor, Unexplained, need

Cell = Callable[[Tensor, Tensor, Tensor, dict[str, Tensor]], tuple[Tensor, Tensor,
                                                                    dict[str, Tensor]]]


def _lstm_step(x: Tensor, h: Tensor, c: Tensor,
               w: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    pre = x @ w["ih"].T + h @ w["hh"].T + w.get("bih", 0) + w.get("bhh", 0)
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o, "c": c_new, "h": h_new,
                          "c_prev": c, "h_prev": h, "x": x}


def _lstm_back(s: dict[str, Tensor], dh: Tensor,
               dc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """→ (d pre-activations [ih], [hh], dh_prev via W_hh pending, dc_prev, gate grads)."""
    tc = torch.tanh(s["c"])
    dc = dc + dh * s["o"] * (1 - tc * tc)
    grads = {"o": dh * tc, "i": dc * s["g"], "g": dc * s["i"], "f": dc * s["c_prev"],
             "c": dc, "h": dh}
    pre = torch.cat([grads["i"] * s["i"] * (1 - s["i"]), grads["f"] * s["f"] * (1 - s["f"]),
                     grads["g"] * (1 - s["g"] * s["g"]),
                     grads["o"] * s["o"] * (1 - s["o"])], dim=-1)
    return pre, pre, torch.zeros_like(dh), dc * s["f"], grads


def _gru_step(x: Tensor, h: Tensor, _c: Tensor,
              w: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    gi = x @ w["ih"].T + w.get("bih", 0)
    gh = h @ w["hh"].T + w.get("bhh", 0)
    ir, iz, i_n = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(i_n + r * hn)
    h_new = (1 - z) * n + z * h
    return h_new, _c, {"r": r, "z": z, "n": n, "h": h_new, "hn": hn, "h_prev": h, "x": x}


def _gru_back(s: dict[str, Tensor], dh: Tensor,
              dc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    dn = dh * (1 - s["z"])
    dz = dh * (s["h_prev"] - s["n"])
    dan = dn * (1 - s["n"] * s["n"])
    dr = dan * s["hn"]
    dar, daz = dr * s["r"] * (1 - s["r"]), dz * s["z"] * (1 - s["z"])
    grads = {"r": dr, "z": dz, "n": dn, "h": dh}
    return (torch.cat([dar, daz, dan], dim=-1), torch.cat([dar, daz, dan * s["r"]], dim=-1),
            dh * s["z"], dc, grads)


_CELLS = {"LSTM": (_lstm_step, _lstm_back, "ifgoch"), "GRU": (_gru_step, _gru_back, "rznh")}
_GATES = {"i": "input gate", "f": "forget gate", "g": "candidate", "o": "output gate",
          "c": "cell state", "h": "hidden state", "r": "reset gate", "z": "update gate",
          "n": "candidate"}


def _direction(kind: str, x: Tensor, w: dict[str, Tensor], reverse: bool,
               hidden: int) -> list[dict[str, Tensor]]:
    """The cell run over x [N, T, D]; its saved values per step, in time order."""
    step = _CELLS[kind][0]
    h = c = torch.zeros(x.shape[0], hidden, dtype=x.dtype)
    saved: list[dict[str, Tensor]] = [{}] * x.shape[1]
    for t in (reversed(range(x.shape[1])) if reverse else range(x.shape[1])):
        h, c, saved[t] = step(x[:, t], h, c, w)
    return saved


def _direction_back(kind: str, saved: list[dict[str, Tensor]], w: dict[str, Tensor],
                    dout: Tensor, reverse: bool,
                    params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Backpropagation through time: dL/dx [N, T, D] and each gate's gradient [N, T, H]."""
    back = _CELLS[kind][1]
    steps = len(saved)
    dh_next = torch.zeros_like(dout[:, 0])
    dc_next = torch.zeros_like(dh_next)
    dx = torch.zeros(*dout.shape[:2], w["ih"].shape[1], dtype=dout.dtype)
    gates: dict[str, list[Tensor]] = {}
    sums = {k: torch.zeros_like(w[k]) for k in w}
    for t in (range(steps) if reverse else reversed(range(steps))):
        s = saved[t]
        d_ih, d_hh, dh_direct, dc_next, grads = back(s, dout[:, t] + dh_next, dc_next)
        dx[:, t] = d_ih @ w["ih"]
        dh_next = dh_direct + d_hh @ w["hh"]
        sums["ih"] += d_ih.T @ s["x"]
        sums["hh"] += d_hh.T @ s["h_prev"]
        if "bih" in w:
            sums["bih"] += d_ih.sum(0)
            sums["bhh"] += d_hh.sum(0)
        for name, g in grads.items():
            gates.setdefault(name, [None] * steps)[t] = g  # type: ignore[list-item]
    params.update(sums)
    return dx, {k: torch.stack(v, dim=1) for k, v in gates.items()}


def _layer_weights(v: Local, layer: int, reverse: bool) -> tuple[str, dict[str, Tensor]]:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    names = {"ih": f"weight_ih{suffix}", "hh": f"weight_hh{suffix}",
             "bih": f"bias_ih{suffix}", "bhh": f"bias_hh{suffix}"}
    w = {k: need(v, n) for k, n in names.items() if k in ("ih", "hh") or n in v.weights}
    return suffix, w


def _between_layers(v: Local) -> list[Tensor | None]:
    """The dropout mask on each stacked layer's input (layer 1 on), batch first."""
    layers, p = v.params["num_layers"], v.params["dropout"]
    masks = v.extras.get("masks", [])
    if p == 0 or layers == 1 or not v.extras.get("training", True):
        return [None] * layers
    if len(masks) != layers - 1:
        raise Unexplained(f"{v.node}'s dropout masks were not all recorded in this trace")
    keep = v.dy.shape[0]
    return [None, *[m.transpose(0, 1)[:keep] for m in masks]]


def _recurrent(v: Local, kind: str) -> Rule:
    hidden, p, s = v.params["hidden_size"], v.params["dropout"], v.sample
    dirs = (False, True) if v.params["bidirectional"] else (False,)
    masks = _between_layers(v)
    inputs, runs, x = [], [], v.xs[0]
    for layer in range(v.params["num_layers"]):
        if masks[layer] is not None:
            x = x * masks[layer].to(x.dtype) / (1 - p)
        inputs.append(x)
        run = []
        for rev in dirs:
            suffix, w = _layer_weights(v, layer, rev)
            run.append((suffix, w, rev, _direction(kind, x, w, rev, hidden)))
        runs.append(run)
        x = torch.cat([torch.stack([st["h"] for st in saved], dim=1)
                       for *_, saved in runs[-1]], dim=-1)
    params: dict[str, Tensor] = {}
    parts: list[Part] = []
    dout = v.dy
    for layer in reversed(range(len(runs))):
        dx = torch.zeros_like(inputs[layer])
        layer_parts: list[Part] = []
        for k, (suffix, w, rev, saved) in enumerate(runs[layer]):
            sums: dict[str, Tensor] = {}
            d, gates = _direction_back(kind, saved, w, dout[..., k * hidden:(k + 1) * hidden],
                                       rev, sums)
            dx = dx + d
            names = {"ih": "weight_ih", "hh": "weight_hh", "bih": "bias_ih", "bhh": "bias_hh"}
            params.update({f"{names[n]}{suffix}": g for n, g in sums.items()})
            where = f"layer {layer}{' reverse' if rev else ''}: "
            layer_parts += [Part(f"{where}{g} ({_GATES[g]})", _GATE_FORMULAS[kind][g],
                                 torch.stack([st[g] for st in saved], dim=1)[s], gates[g][s])
                            for g in _CELLS[kind][2]]
        parts[:0] = layer_parts  # going back: the last layer first; shown in layer order
        dout = dx if masks[layer] is None else dx * masks[layer].to(dx.dtype) / (1 - p)
    return Rule(_FORMULAS[kind], [dout], params, terms={
        "{x}": v.xs[0][s], "dL/d{y}": v.dy[s], "dL/d{x}": dout[s]}, parts=parts)


_FORMULAS = {
    "LSTM": "c_t = f⊙c_{t−1} + i⊙g;  h_t = o⊙tanh(c_t);  going back in time: "
            "dL/dc_t += dL/dh_t ⊙ o ⊙ (1 − tanh²c_t), dL/dc_{t−1} = dL/dc_t ⊙ f, "
            "dL/dh_{t−1} = (gate gradients)·W_hh, dL/d{x}_t = (gate gradients)·W_ih",
    "GRU": "h_t = (1 − z)⊙n + z⊙h_{t−1};  going back in time: dL/dn = dL/dh_t ⊙ (1 − z), "
           "dL/dz = dL/dh_t ⊙ (h_{t−1} − n), dL/dh_{t−1} = dL/dh_t ⊙ z + (gate gradients)·W_hh, "
           "dL/d{x}_t = (gate gradients)·W_ih",
}
_GATE_FORMULAS = {
    "LSTM": {"i": "i = σ(W_ii·x + W_hi·h + b)", "f": "f = σ(W_if·x + W_hf·h + b)",
             "g": "g = tanh(W_ig·x + W_hg·h + b)", "o": "o = σ(W_io·x + W_ho·h + b)",
             "c": "c_t = f⊙c_{t−1} + i⊙g", "h": "h_t = o⊙tanh(c_t)"},
    "GRU": {"r": "r = σ(W_ir·x + W_hr·h + b)", "z": "z = σ(W_iz·x + W_hz·h + b)",
            "n": "n = tanh(W_in·x + b_in + r⊙(W_hn·h + b_hn))",
            "h": "h_t = (1 − z)⊙n + z⊙h_{t−1}"},
}

RULES: dict[str, RuleFn] = {"LSTM": partial(_recurrent, kind="LSTM"),
                            "GRU": partial(_recurrent, kind="GRU")}
