"""The TensorBoard "Roofline" tab: serves reports written by :mod:`.summary` and the frontend.

Registered through the ``tensorboard_plugins`` entry point
(``roofline = torch_roofline.tensorboard.plugin:RooflinePlugin``). Routes, under
``/data/plugin/roofline``:

* ``/runs`` -> ``{run: {tag: [step, …]}}``, every run holding roofline reports;
* ``/report?run=R&tag=T&step=S`` -> that report (schema JSON, NaN/inf as null);
  400 for a missing or malformed parameter (a step that is not an integer from 0 to
  ``MAX_STEP``, the range the writer accepts), 404 for an unknown run, tag or step,
  422 when the stored payload is not JSON or nests too deeply for Python's parser (a
  report nests 4 levels); never 500 for anything a request or a stored payload holds;
* ``/index.js``, ``/style.css`` -> the frontend (a fixed allow-list from ``static/``).

Limits: listing steps reads every stored report of a tag (TensorBoard has no
steps-only query); the listing is cached until the tag's newest step or wall time
changes. TensorBoard keeps 10 or 100 steps per tag unless started with
``--samples_per_plugin=roofline=0``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from torch_roofline.report.tensorboard_metadata import MAX_STEP, PLUGIN_NAME

__all__ = ["RooflinePlugin"]

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# route -> (file in static/, content type). Nothing else under static/ is ever served.
_STATIC_FILES: Dict[str, Tuple[str, str]] = {
    "/index.js": ("index.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
# Reads ask for every stored point: TensorBoard's own sampling (--samples_per_plugin)
# already bounds how many there are.
_ALL_POINTS = 2**31 - 1


def _error(request: Any, status: int, message: str) -> wrappers.Response:
    return http_util.Respond(request, {"error": message}, "application/json", code=status)


def _no_constants(name: str) -> None:
    """``json.loads`` hook: NaN/Infinity in a stored payload become null."""
    return None


class RooflinePlugin(base_plugin.TBPlugin):
    """Serves roofline reports (plugin name ``roofline``) and the Roofline tab's frontend."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._data_provider = context.data_provider
        self._steps_cache: Dict[Tuple[str, str, str], Tuple[Any, List[int]]] = {}
        self._lock = threading.Lock()

    # -- TBPlugin API ---------------------------------------------------------

    def get_plugin_apps(self) -> Dict[str, Any]:
        routes: Dict[str, Any] = {"/runs": self._serve_runs, "/report": self._serve_report}
        routes.update({route: self._serve_static for route in _STATIC_FILES})
        return routes

    def is_active(self) -> bool:
        # Cheap: TensorBoard enables the tab by itself whenever data tagged with our
        # plugin name exists (list_plugins); no scan of the log directory here.
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Roofline", disable_reload=False)

    # -- data -----------------------------------------------------------------

    def _steps(self, ctx: Any, experiment: str, run: str, tag: str, series: Any) -> List[int]:
        """Sorted steps of one run/tag, cached until the series' newest point changes."""
        key = (experiment, run, tag)
        stamp = (series.max_step, series.max_wall_time)
        with self._lock:
            cached = self._steps_cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        points = self._read(ctx, experiment, run, tag)
        steps = sorted({int(p.step) for p in points})
        with self._lock:
            self._steps_cache[key] = (stamp, steps)
        return steps

    def _read(self, ctx: Any, experiment: str, run: str, tag: str) -> list:
        result = self._data_provider.read_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=PLUGIN_NAME,
            downsample=_ALL_POINTS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        return list(result.get(run, {}).get(tag, []))

    def _index(self, ctx: Any, experiment: str) -> Dict[str, Dict[str, Any]]:
        return self._data_provider.list_tensors(ctx, experiment_id=experiment, plugin_name=PLUGIN_NAME)

    # -- routes ---------------------------------------------------------------

    @wrappers.Request.application
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        runs = {
            run: {tag: self._steps(ctx, experiment, run, tag, series) for tag, series in sorted(tags.items())}
            for run, tags in sorted(self._index(ctx, experiment).items())
        }
        return http_util.Respond(request, runs, "application/json")

    @wrappers.Request.application
    def _serve_report(self, request: wrappers.Request) -> wrappers.Response:
        run = request.args.get("run")
        tag = request.args.get("tag")
        step_text = request.args.get("step")
        missing = [name for name, value in (("run", run), ("tag", tag), ("step", step_text)) if value is None]
        if missing:
            return _error(
                request, 400, f"missing query parameter(s) {', '.join(missing)}; expected report?run=RUN&tag=TAG&step=STEP"
            )
        step = _parse_step(step_text)
        if step is None:
            shown = step_text if len(step_text) <= 40 else f"{step_text[:20]}...({len(step_text)} characters)"
            return _error(request, 400, f"step={shown!r} is not a non-negative integer up to {MAX_STEP} "
                                        "(TensorBoard's int64 steps); expected e.g. step=100")
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        index = self._index(ctx, experiment)
        if run not in index:
            return _error(request, 404, f"no run {run!r} holds roofline reports; see ./runs for the runs")
        if tag not in index[run]:
            return _error(request, 404, f"run {run!r} has no roofline tag {tag!r}; its tags: {sorted(index[run])}")
        point = next((p for p in self._read(ctx, experiment, run, tag) if int(p.step) == step), None)
        if point is None:
            return _error(
                request,
                404,
                f"run {run!r}, tag {tag!r} has no step {step} (TensorBoard may have sampled it out: "
                "start it with --samples_per_plugin=roofline=0 to keep every step)",
            )
        try:
            body = _strict_json(point.numpy)
        except ValueError as exc:
            return _error(request, 422, f"the report at run {run!r}, tag {tag!r}, step {step} is unreadable: {exc}")
        return http_util.Respond(request, body, "application/json")

    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        # Only exact routes from the allow-list reach here; the request path never
        # becomes a file path, so "..", "%2f" and friends cannot escape static/.
        route = "/" + request.path.rsplit("/", 1)[-1]
        entry = _STATIC_FILES.get(route)
        if entry is None:
            return _error(request, 404, f"no static file {route!r}")
        filename, content_type = entry
        with open(os.path.join(_STATIC_DIR, filename), "rb") as handle:
            body = handle.read()
        return http_util.Respond(request, body, content_type)


def _parse_step(text: str) -> Optional[int]:
    """A step from the query: decimal digits naming 0..MAX_STEP; ``None`` for anything else
    (checked by length before ``int()``, which refuses numbers of over 4,300 digits)."""
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > len(str(MAX_STEP)):
        return None
    step = int(text)
    return step if step <= MAX_STEP else None


class _NonStandardNumber(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _NonStandardNumber(name)


def _strict_json(value: Any) -> bytes:
    """The JSON document in a stored rank-0 string tensor, as bytes the browser can parse.

    The stored text is served as is when it is strict JSON (what our writer produces: no
    re-encoding of a multi-megabyte report); NaN/Infinity from another writer become null.

    Raises:
        ValueError: when the tensor holds no single UTF-8 JSON document, or one nested too
            deeply for ``json`` (RecursionError: the C parser stops at the recursion limit).
    """
    try:
        raw = value.item() if getattr(value, "size", 1) == 1 else None
    except (AttributeError, ValueError):
        raw = None
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes):
        raise ValueError("expected one string (a JSON document), found a tensor of another kind")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 JSON ({exc})") from None
    try:
        _loads(text, _reject_constant)
        return raw
    except _NonStandardNumber:  # NaN/Infinity from another writer: re-encoded once, as null
        document = _loads(text, _no_constants)
        try:
            return json.dumps(document, allow_nan=False, sort_keys=True).encode("utf-8")
        except RecursionError:  # parsed just below the limit, one frame deeper to encode
            raise ValueError(_TOO_DEEP) from None


def _loads(text: str, parse_constant: Any) -> Any:
    """``json.loads`` whose failures (malformed, or nested past the recursion limit, where the
    C parser stops cleanly) are ValueErrors naming the cause; ``parse_constant`` may raise."""
    try:
        return json.loads(text, parse_constant=parse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None


_TOO_DEEP = "JSON nested too deeply to parse (a report nests 4 levels)"
