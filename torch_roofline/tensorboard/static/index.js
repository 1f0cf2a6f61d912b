// The Roofline tab of TensorBoard (torch_roofline). Plain ES module, no dependencies,
// no build step. TensorBoard loads it in an iframe whose <base> is plugin/roofline/ and
// calls render().
//
// Safety: module names and every other string from a report are user-controlled. The
// DOM is built with createElement/createElementNS, textContent and setAttribute only;
// nothing from a report ever reaches innerHTML or an HTML parser.
//
// Units follow docs/report-schema.md: FLOPs, bytes, seconds, FLOP/s, B/s (SI, decimal).

const SVG_NS = 'http://www.w3.org/2000/svg';
const SCHEMA_RE = /^torch_roofline\.report\/(\d+)$/;
const SUPPORTED_SCHEMA_MAJOR = 1;
const BOUNDS = ['compute', 'memory', 'overhead'];
const BOUND_COLOURS = {compute: '#d95f02', memory: '#1b9e77', overhead: '#7570b3'};
const UNKNOWN_COLOUR = '#9e9e9e';
const ROOF_COLOURS = ['#1f77b4', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#525252'];
const TABLE_PAGE = 300;          // table rows rendered at once (all rows stay on the chart)
const MARGIN = {left: 72, right: 24, top: 16, bottom: 48};
const CHART_HEIGHT = 500;

// ---------------------------------------------------------------------------- small helpers

/** A finite number, or null. */
function num(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function str(value, fallback = '') {
  return typeof value === 'string' ? value : (value === null || value === undefined ? fallback : String(value));
}

/** createElement with properties (className, textContent, ...) and attributes (attrs). */
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'attrs') {
      for (const [name, v] of Object.entries(value)) node.setAttribute(name, String(v));
    } else {
      node[key] = value;
    }
  }
  for (const child of children) {
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

// Numbers for people: the rules of torch_roofline/_numbers.py (fixed_text, si_text,
// percent_text, UNKNOWN), which the report's table and the TensorBoard text use; a test runs
// both on the same numbers. Keep them in step.
const UNKNOWN = '-';
const PREFIXES = [[1e18, 'E'], [1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k'], [1, ''],
  [1e-3, 'm'], [1e-6, 'µ'], [1e-9, 'n'], [1e-12, 'p']];
const TIME_PREFIXES = PREFIXES.filter(([scale]) => scale <= 1);  // 1,234 s, never 1.23 ks

/** Three figures or more: "1,234", "12.3", "1.23"; "0" for zero. */
function digits(x) {
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 100) return Number(x.toFixed(0)).toLocaleString('en-US');
  return a >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** SI-prefixed decimal: si(1.5e12, 'FLOP/s') -> "1.50 TFLOP/s", si(6.1e-6, 's') -> "6.10 µs". */
function si(value, unit) {
  const v = num(value);
  if (v === null) return UNKNOWN;
  if (v === 0) return `0 ${unit}`;
  for (const [scale, prefix] of unit === 's' ? TIME_PREFIXES : PREFIXES) {
    if (Math.abs(v) >= scale * 0.9995) return `${digits(v / scale)} ${prefix}${unit}`;
  }
  return `${v.toExponential(2)} ${unit}`;
}

/** A 0-1 share as "12.3 %". */
function pct(value) {
  const v = num(value);
  return v === null ? UNKNOWN : `${(100 * v).toFixed(1)} %`;
}

function plain(value) {
  const v = num(value);
  if (v === null) return UNKNOWN;
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2) ? v.toExponential(2) : String(+v.toPrecision(3));
}

function count(value) {
  const v = num(value);
  return v === null ? UNKNOWN : String(v);
}

function tickLabel(exponent, unit) {
  if (unit === 'FLOP/s') {
    const [scale, prefix] = PREFIXES.find(([s]) => 10 ** exponent >= s * 0.9995) || [1, ''];
    return `${+(10 ** exponent / scale).toPrecision(3)} ${prefix}`;
  }
  return exponent >= -3 && exponent <= 4 ? String(+(10 ** exponent).toPrecision(1)) : `1e${exponent}`;
}

// ---------------------------------------------------------------------------- data

class PayloadError extends Error {}

/**
 * Checks a payload against schema torch_roofline.report/1 and returns the rows the tab
 * draws. Throws PayloadError with a readable message for a corrupt or foreign payload.
 */
function parseReport(payload) {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new PayloadError(`expected a JSON object (a torch_roofline report), got ${Array.isArray(payload) ? 'an array' : typeof payload}`);
  }
  const match = SCHEMA_RE.exec(str(payload.schema));
  if (!match) {
    throw new PayloadError(`this is not a torch_roofline report: its "schema" field is ${JSON.stringify(payload.schema ?? null)}, expected "torch_roofline.report/1"`);
  }
  if (Number(match[1]) !== SUPPORTED_SCHEMA_MAJOR) {
    throw new PayloadError(`report schema version ${match[1]} is not supported by this tab (it reads version ${SUPPORTED_SCHEMA_MAJOR}); upgrade torch_roofline`);
  }
  if (!Array.isArray(payload.modules)) throw new PayloadError('the report has no "modules" list');
  if (payload.ops !== undefined && payload.ops !== null && !Array.isArray(payload.ops)) throw new PayloadError('the report\'s "ops" is not a list');
  const model = str(payload.model, 'model');
  const toRows = (list, level) => list.filter((r) => r !== null && typeof r === 'object').map((r) => makeRow(r, level, model));
  const device = payload.device && typeof payload.device === 'object' ? payload.device : {};
  const roofs = (Array.isArray(device.roofs) ? device.roofs : []).filter((r) => r && typeof r === 'object').map((r) => ({
    dtype: str(r.dtype, '?'), unit: str(r.unit, '?'), source: str(r.source, '?'), used: r.used !== false,
    peak: num(r.peak_flops_per_s), bandwidth: num(r.bandwidth_bytes_per_s), ridge: num(r.ridge),
  }));
  return {
    raw: payload,
    model,
    predicted: payload.predicted === true,
    device,
    roofs,
    totals: payload.totals && typeof payload.totals === 'object' ? payload.totals : {},
    modules: toRows(payload.modules, 'module'),
    ops: toRows(Array.isArray(payload.ops) ? payload.ops : [], 'op'),
    uncounted: Array.isArray(payload.uncounted) ? payload.uncounted.filter((u) => u && typeof u === 'object') : [],
  };
}

function makeRow(r, level, model) {
  const name = str(r.name);
  const flops = num(r.flops);
  const bytes = (num(r.bytes_read) ?? 0) + (num(r.bytes_written) ?? 0);
  const measured = num(r.time_s);
  const time = measured ?? num(r.roofline_time_s);
  const intensity = num(r.intensity) ?? (flops !== null && bytes > 0 ? flops / bytes : null);
  const attainable = num(r.attainable_flops_per_s);
  // Predicted reports have no measured time: their points sit on the roof.
  const achieved = num(r.achieved_flops_per_s) ?? (flops !== null && measured ? flops / measured : null) ?? attainable;
  const op = level === 'op' ? str(r.op, '?') : '';
  const phase = str(r.phase, '?');
  const row = {
    level, name, display: name === '' ? model : name, op, type: str(r.type, '?'), phase,
    depth: num(r.depth), calls: num(r.calls), flops, bytes, intensity, time, timeMeasured: measured,
    achieved, attainable, efficiency: num(r.efficiency), bound: str(r.bound, 'unknown'),
    timeLost: num(r.time_lost_s), rooflineTime: num(r.roofline_time_s), suspect: r.suspect === true,
    roof: r.roof && typeof r.roof === 'object' ? `${str(r.roof.dtype, '?')} ${str(r.roof.unit, '?')}` : UNKNOWN,
    key: `${level}\u0000${name}\u0000${phase}\u0000${op}`,
  };
  row.plottable = intensity !== null && intensity > 0 && achieved !== null && achieved > 0;
  row.lx = row.plottable ? Math.log10(intensity) : 0;
  row.ly = row.plottable ? Math.log10(achieved) : 0;
  return row;
}

async function fetchJson(url) {
  let response;
  try {
    response = await fetch(url, {credentials: 'same-origin'});
  } catch (err) {
    throw new Error(`cannot reach TensorBoard (${err.message})`);
  }
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new PayloadError(`the server sent something that is not JSON (HTTP ${response.status}): ${err.message}`);
  }
  if (!response.ok) {
    throw new Error(body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`);
  }
  return body;
}

// ---------------------------------------------------------------------------- the app

class RooflineTab {
  constructor(host) {
    this.host = host;
    this.runs = {};
    this.cache = new Map();
    this.state = {
      run: null, tag: null, step: null, phase: null, level: 'module', depth: 'all',
      compare: false, cmpRun: null, cmpStep: null,
      sortKey: 'time', sortDesc: true, selectedKey: null, tableLimit: TABLE_PAGE,
    };
    this.report = null;
    this.baseline = null;
    this.domain = null;       // {x0, x1, y0, y1}: log10 of the axis ranges
    this.autoDomain = null;
    this.rows = [];
    this.tableRows = [];
    this.drawScheduled = false;
    this.build();
  }

  // -- layout ---------------------------------------------------------------

  build() {
    const css = el('link', {rel: 'stylesheet', href: new URL('./style.css', import.meta.url).href});
    document.head.append(css);
    this.root = el('div', {id: 'roofline-root', className: 'rf'});
    this.root.dataset.state = 'loading';

    const select = (id, label) => {
      const s = el('select', {id});
      return [s, el('label', {}, [`${label} `, s])];
    };
    [this.runSelect, this.runLabel] = select('run-select', 'Run');
    [this.tagSelect, this.tagLabel] = select('tag-select', 'Tag');
    [this.stepSelect, this.stepLabel] = select('step-select', 'Step');
    [this.phaseSelect, this.phaseLabel] = select('phase-select', 'Phase');
    [this.levelSelect, this.levelLabel] = select('level-select', 'Level');
    [this.depthSelect, this.depthLabel] = select('depth-select', 'Depth');
    for (const [value, text] of [['module', 'modules'], ['op', 'ops']]) this.levelSelect.append(el('option', {value, textContent: text}));
    this.refreshButton = el('button', {id: 'refresh-button', type: 'button', textContent: '⟳ Refresh', title: 'Reload the run list and the report'});

    this.compareToggle = el('input', {id: 'compare-toggle', type: 'checkbox'});
    [this.cmpRunSelect, this.cmpRunLabel] = select('compare-run-select', 'run');
    [this.cmpStepSelect, this.cmpStepLabel] = select('compare-step-select', 'step');
    this.cmpRunLabel.hidden = this.cmpStepLabel.hidden = true;
    const compareBox = el('span', {className: 'rf-compare'}, [
      el('label', {}, [this.compareToggle, ' Compare with baseline']), this.cmpRunLabel, this.cmpStepLabel]);

    this.controls = el('div', {className: 'rf-controls'}, [
      this.runLabel, this.tagLabel, this.stepLabel, this.phaseLabel, this.levelLabel, this.depthLabel,
      this.refreshButton, compareBox]);
    this.message = el('div', {id: 'roofline-message', className: 'rf-message', attrs: {role: 'alert'}});
    this.totals = el('div', {id: 'roofline-totals', className: 'rf-totals'});

    // Chart.
    this.chartBox = el('div', {className: 'rf-chart'});
    this.tooltip = el('div', {id: 'roofline-tooltip', className: 'rf-tooltip'});
    this.tooltip.hidden = true;
    this.svg = svgEl('svg', {id: 'roofline-chart', height: CHART_HEIGHT, role: 'img'});
    this.chartBox.append(this.svg, this.tooltip);
    this.legend = el('div', {className: 'rf-legend'});

    const axisInput = (id, title) => el('input', {id, type: 'text', size: 8, title});
    this.xMin = axisInput('x-min', 'lowest intensity shown, FLOP/B');
    this.xMax = axisInput('x-max', 'highest intensity shown, FLOP/B');
    this.yMin = axisInput('y-min', 'lowest FLOP/s shown');
    this.yMax = axisInput('y-max', 'highest FLOP/s shown');
    const apply = el('button', {type: 'button', textContent: 'Apply'});
    const reset = el('button', {id: 'reset-view', type: 'button', textContent: 'Reset view'});
    this.axisForm = el('form', {className: 'rf-axes'}, [
      'Intensity (FLOP/B) ', this.xMin, ' – ', this.xMax, '   FLOP/s ', this.yMin, ' – ', this.yMax, ' ', apply, ' ', reset,
      el('span', {className: 'rf-hint', textContent: '  wheel: zoom · drag: pan'})]);

    // Table.
    this.tableNote = el('div', {className: 'rf-note'});
    this.table = el('table', {id: 'roofline-table', className: 'rf-table'});
    this.moreButton = el('button', {type: 'button', className: 'rf-more'});
    this.moreButton.hidden = true;

    this.root.append(this.controls, this.message, this.totals, this.legend, this.chartBox, this.axisForm,
      this.tableNote, el('div', {className: 'rf-table-box'}, [this.table]), this.moreButton);
    this.host.append(this.root);

    // Events.
    this.runSelect.addEventListener('change', () => this.onRunChange());
    this.tagSelect.addEventListener('change', () => this.onTagChange());
    this.stepSelect.addEventListener('change', () => { this.state.step = Number(this.stepSelect.value); this.loadAndShow(); });
    this.phaseSelect.addEventListener('change', () => { this.state.phase = this.phaseSelect.value; this.showView(true); });
    this.levelSelect.addEventListener('change', () => { this.state.level = this.levelSelect.value; this.state.phase = null; this.showView(true); });
    this.depthSelect.addEventListener('change', () => { this.state.depth = this.depthSelect.value; this.showView(true); });
    this.refreshButton.addEventListener('click', () => this.refresh());
    this.compareToggle.addEventListener('change', () => { this.state.compare = this.compareToggle.checked; this.loadAndShow(); });
    this.cmpRunSelect.addEventListener('change', () => { this.state.cmpRun = this.cmpRunSelect.value; this.state.cmpStep = null; this.loadAndShow(); });
    this.cmpStepSelect.addEventListener('change', () => { this.state.cmpStep = Number(this.cmpStepSelect.value); this.loadAndShow(); });
    this.axisForm.addEventListener('submit', (event) => { event.preventDefault(); this.applyAxisInputs(); });
    apply.addEventListener('click', () => this.applyAxisInputs());
    reset.addEventListener('click', () => { this.domain = {...this.autoDomain}; this.drawChart(); });
    this.moreButton.addEventListener('click', () => { this.state.tableLimit = Infinity; this.drawTable(); });
    this.installChartEvents();
    window.addEventListener('resize', () => { if (this.rows.length || this.report) this.drawChart(); });
  }

  setBusy(state) {
    this.root.dataset.state = state;
  }

  showMessage(text, kind = 'error') {
    this.message.textContent = text;
    this.message.className = `rf-message rf-${kind}`;
    this.message.hidden = !text;
  }

  // -- loading --------------------------------------------------------------

  async start() {
    await this.refresh();
  }

  async refresh() {
    this.cache.clear();
    this.setBusy('loading');
    try {
      this.runs = await fetchJson('./runs');
    } catch (err) {
      this.fail(`Could not list the runs: ${err.message}`);
      return;
    }
    const runNames = Object.keys(this.runs).filter((run) => Object.keys(this.runs[run] || {}).length);
    if (!runNames.length) {
      this.clearView();
      this.showMessage('No roofline reports in this log directory yet. Write one with '
        + 'torch_roofline.tensorboard.write_report(writer_or_logdir, report, step=...).', 'info');
      this.setBusy('empty');
      return;
    }
    fillSelect(this.runSelect, runNames.map((r) => [r, r]), this.state.run);
    this.state.run = this.runSelect.value;
    fillSelect(this.cmpRunSelect, runNames.map((r) => [r, r]), this.state.cmpRun ?? this.state.run);
    this.state.cmpRun = this.cmpRunSelect.value;
    this.fillTagAndSteps();
    await this.loadAndShow();
  }

  fillTagAndSteps() {
    const tags = Object.keys(this.runs[this.state.run] || {});
    fillSelect(this.tagSelect, tags.map((t) => [t, t]), this.state.tag);
    this.state.tag = this.tagSelect.value;
    this.tagLabel.hidden = tags.length < 2;
    const steps = this.stepsOf(this.state.run, this.state.tag);
    const wanted = steps.includes(this.state.step) ? this.state.step : steps[steps.length - 1];
    fillSelect(this.stepSelect, steps.map((s) => [String(s), String(s)]), String(wanted));
    this.state.step = Number(this.stepSelect.value);
  }

  stepsOf(run, tag) {
    const steps = ((this.runs[run] || {})[tag]) || [];
    return Array.isArray(steps) ? steps.filter((s) => Number.isInteger(s)) : [];
  }

  onRunChange() {
    this.state.run = this.runSelect.value;
    this.fillTagAndSteps();
    this.autoDomain = null;
    this.loadAndShow();
  }

  onTagChange() {
    this.state.tag = this.tagSelect.value;
    this.fillTagAndSteps();
    this.loadAndShow();
  }

  async getReport(run, tag, step) {
    const key = JSON.stringify([run, tag, step]);
    if (!this.cache.has(key)) {
      const url = `./report?run=${encodeURIComponent(run)}&tag=${encodeURIComponent(tag)}&step=${encodeURIComponent(step)}`;
      // Cache the promise; a failure is not cached so Refresh or a reselect retries.
      const promise = fetchJson(url).then(parseReport);
      this.cache.set(key, promise);
      promise.catch(() => this.cache.delete(key));
    }
    return this.cache.get(key);
  }

  async loadAndShow() {
    const {run, tag, step} = this.state;
    if (run === null || tag === null || !Number.isInteger(step)) return;
    const token = Symbol('load');
    this.loadToken = token;
    this.setBusy('loading');
    this.showMessage('', 'info');
    const t0 = performance.now();
    let report;
    let baseline = null;
    try {
      report = await this.getReport(run, tag, step);
      this.cmpRunLabel.hidden = this.cmpStepLabel.hidden = !this.state.compare;
      if (this.state.compare) {
        const cmpTag = this.runs[this.state.cmpRun] && this.runs[this.state.cmpRun][tag] ? tag : Object.keys(this.runs[this.state.cmpRun] || {})[0];
        const steps = this.stepsOf(this.state.cmpRun, cmpTag);
        const defaultStep = steps.filter((s) => !(this.state.cmpRun === run && s === step)).slice(-1)[0] ?? steps[0];
        const wanted = steps.includes(this.state.cmpStep) ? this.state.cmpStep : defaultStep;
        fillSelect(this.cmpStepSelect, steps.map((s) => [String(s), String(s)]), String(wanted));
        this.state.cmpStep = Number(this.cmpStepSelect.value);
        if (cmpTag !== undefined && Number.isInteger(this.state.cmpStep)) {
          baseline = await this.getReport(this.state.cmpRun, cmpTag, this.state.cmpStep);
          this.baselineLabel = `${this.state.cmpRun} · step ${this.state.cmpStep}`;
        }
      }
    } catch (err) {
      if (this.loadToken !== token) return;
      this.fail(`Cannot show ${run} · ${tag} · step ${step}: ${err.message}`);
      return;
    }
    if (this.loadToken !== token) return;  // a newer selection superseded this one
    this.report = report;
    this.baseline = baseline;
    try {
      this.showView(false);
    } catch (err) {
      this.fail(`The report at ${run} · ${tag} · step ${step} could not be drawn: ${err.message}`);
      return;
    }
    this.root.dataset.run = run;
    this.root.dataset.step = String(step);
    this.root.dataset.renderMs = (performance.now() - t0).toFixed(1);
    this.setBusy('ready');
  }

  fail(text) {
    this.clearView();
    this.showMessage(text, 'error');
    this.setBusy('error');
  }

  clearView() {
    this.report = null;
    this.baseline = null;
    this.rows = [];
    this.totals.replaceChildren();
    this.legend.replaceChildren();
    this.svg.replaceChildren();
    this.table.replaceChildren();
    this.tableNote.textContent = '';
    this.moreButton.hidden = true;
    this.tooltip.hidden = true;
  }

  // -- view -----------------------------------------------------------------

  /** Rows of a report under the current level / phase / depth filters. */
  filterRows(report) {
    const {level, phase, depth} = this.state;
    let rows = level === 'op' ? report.ops : report.modules;
    if (phase && phase !== 'all') rows = rows.filter((r) => r.phase === phase);
    else if (level === 'module' && rows.some((r) => r.phase === 'all')) rows = rows.filter((r) => r.phase === 'all');
    if (depth !== 'all') rows = rows.filter((r) => r.depth === Number(depth));
    return rows;
  }

  showView(userChange) {
    const report = this.report;
    if (!report) return;
    const source = this.state.level === 'op' ? report.ops : report.modules;
    const phases = [...new Set(source.map((r) => r.phase))].filter((p) => p !== 'all');
    const phaseOptions = [['all', this.state.level === 'module' ? 'all (summed)' : 'all'], ...phases.map((p) => [p, p])];
    fillSelect(this.phaseSelect, phaseOptions, this.state.phase ?? 'all');
    this.state.phase = this.phaseSelect.value;
    const depths = [...new Set(report.modules.map((r) => r.depth).filter((d) => d !== null))].sort((a, b) => a - b);
    fillSelect(this.depthSelect, [['all', 'all'], ...depths.map((d) => [String(d), String(d)])], this.state.depth);
    this.state.depth = this.depthSelect.value;
    this.levelSelect.value = this.state.level;

    this.rows = this.filterRows(report);
    const baseRows = this.baseline ? this.filterRows(this.baseline) : [];
    this.baseByKey = new Map(baseRows.map((r) => [r.key, r]));
    this.baseRows = baseRows;
    if (userChange) this.state.tableLimit = TABLE_PAGE;
    const auto = computeDomain([...this.rows, ...baseRows], report.roofs);
    if (!this.autoDomain || userChange || !this.domain || !sameDomain(auto, this.autoDomain)) {
      this.autoDomain = auto;
      this.domain = {...auto};
    }
    this.drawTotals();
    this.drawLegend();
    this.drawChart();
    this.drawTable();
  }

  drawTotals() {
    const r = this.report;
    const t = r.totals;
    const share = t.bound_time_share && typeof t.bound_time_share === 'object' ? t.bound_time_share : {};
    const item = (label, value, extra) => el('span', {className: 'rf-total'}, [
      el('span', {className: 'rf-total-label', textContent: label}), ' ', el('b', {textContent: value}), ...(extra ? [' ', extra] : [])]);
    const delta = (field, fmt) => {
      if (!this.baseline) return null;
      const before = num(this.baseline.totals[field]);
      return el('span', {className: 'rf-delta', textContent: `(baseline ${fmt(before)})`});
    };
    const device = r.device;
    const headline = el('div', {className: 'rf-headline'}, [
      el('b', {className: 'rf-model', textContent: r.model}), ' on ',
      el('b', {textContent: str(device.name, str(device.id, 'unknown device'))}),
      el('span', {className: 'rf-dim', textContent: `  roofs: ${str(device.source, '?')} · memory model: ${str(r.raw.memory_model, '?')}`
        + ` · steps averaged: ${count(r.raw.steps)}${r.predicted ? ' · PREDICTED times' : ''}`}),
    ]);
    const numbers = el('div', {className: 'rf-numbers'}, [
      item('efficiency', pct(t.efficiency), delta('efficiency', pct)),
      item('coverage', pct(t.coverage)),
      item('step time', si(t.time_s, 's'), delta('time_s', (v) => si(v, 's'))),
      item('roofline time', si(t.roofline_time_s, 's')),
      item('time lost', si(t.time_lost_s, 's')),
      item('FLOPs', si(t.flops, 'FLOP')),
    ]);
    const shares = el('div', {className: 'rf-shares'}, [el('span', {className: 'rf-total-label', textContent: 'time by bound '})]);
    for (const bound of BOUNDS) {
      const chip = el('span', {className: 'rf-chip', textContent: `${bound} ${pct(share[bound])}`});
      chip.style.borderColor = BOUND_COLOURS[bound];
      shares.append(chip);
    }
    if (r.uncounted.length) {
      const items = r.uncounted.slice(0, 8).map((u) => `${str(u.op, '?')} ×${count(u.calls)} (${si(u.time_s, 's')})`);
      shares.append(el('span', {className: 'rf-dim', textContent: `  uncounted ops: ${items.join(', ')}${r.uncounted.length > 8 ? ', …' : ''}`}));
    }
    this.totals.replaceChildren(headline, numbers, shares);
  }

  drawLegend() {
    const items = BOUNDS.map((bound) => {
      const dot = el('span', {className: 'rf-swatch'});
      dot.style.background = BOUND_COLOURS[bound];
      return el('span', {className: 'rf-legend-item'}, [dot, `${bound}-bound`]);
    });
    items.push(el('span', {className: 'rf-legend-item rf-dim', textContent: 'dot area ∝ time · solid roof: measured · dashed: datasheet/estimated'}));
    if (this.baseline) {
      items.push(el('span', {className: 'rf-legend-item', textContent: `○ baseline ${this.baselineLabel} → current`}));
    }
    this.legend.replaceChildren(...items);
  }

  // -- chart ----------------------------------------------------------------

  geometry() {
    const width = Math.max(480, this.chartBox.clientWidth || 900);
    return {width, height: CHART_HEIGHT, pw: width - MARGIN.left - MARGIN.right, ph: CHART_HEIGHT - MARGIN.top - MARGIN.bottom};
  }

  px(lx) { return MARGIN.left + (lx - this.domain.x0) / (this.domain.x1 - this.domain.x0) * this.geo.pw; }

  py(ly) { return MARGIN.top + this.geo.ph - (ly - this.domain.y0) / (this.domain.y1 - this.domain.y0) * this.geo.ph; }

  drawChart() {
    this.geo = this.geometry();
    const {width, height, pw, ph} = this.geo;
    this.svg.setAttribute('width', width);
    this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    const defs = svgEl('defs');
    const clip = svgEl('clipPath', {id: 'rf-clip'});
    clip.append(svgEl('rect', {x: MARGIN.left, y: MARGIN.top, width: pw, height: ph}));
    const marker = svgEl('marker', {id: 'rf-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'});
    marker.append(svgEl('path', {d: 'M0,0 L10,5 L0,10 z', fill: '#333'}));
    defs.append(clip, marker);
    this.axesLayer = svgEl('g', {class: 'rf-axes-layer'});
    this.background = svgEl('rect', {class: 'rf-bg', x: MARGIN.left, y: MARGIN.top, width: pw, height: ph});
    const plot = svgEl('g', {'clip-path': 'url(#rf-clip)'});
    this.roofLayer = svgEl('g', {class: 'rf-roofs'});
    this.arrowLayer = svgEl('g', {class: 'rf-arrows'});
    this.baseLayer = svgEl('g', {class: 'rf-baseline'});
    this.dotLayer = svgEl('g', {class: 'rf-dots'});
    this.ringLayer = svgEl('g', {class: 'rf-rings'});
    plot.append(this.roofLayer, this.arrowLayer, this.baseLayer, this.dotLayer, this.ringLayer);
    this.svg.replaceChildren(defs, this.background, this.axesLayer, plot);

    // One circle per plottable row; biggest first so small dots stay on top.
    let maxTime = 1e-300;
    for (const r of this.rows) maxTime = Math.max(maxTime, r.time ?? 0);
    for (const r of this.baseRows) maxTime = Math.max(maxTime, r.time ?? 0);
    const radius = (row) => 2.5 + 16 * Math.sqrt(Math.max(0, row.time ?? 0) / maxTime);
    const byTime = (a, b) => (b.time ?? 0) - (a.time ?? 0);
    this.circleRow = new Map();
    const make = (row, baseline) => {
      const colour = BOUND_COLOURS[row.bound] || UNKNOWN_COLOUR;
      const c = svgEl('circle', baseline
        ? {class: 'cmp', r: radius(row).toFixed(2), fill: 'none', stroke: colour}
        : {class: row.suspect ? 'dot suspect' : 'dot', r: radius(row).toFixed(2), fill: colour});
      c.setAttribute('data-name', row.display);
      this.circleRow.set(c, {row, baseline});
      return c;
    };
    const baseFrag = document.createDocumentFragment();
    this.baseDots = this.baseRows.filter((r) => r.plottable).sort(byTime).map((r) => { const c = make(r, true); baseFrag.append(c); return [c, r]; });
    this.baseLayer.append(baseFrag);
    const frag = document.createDocumentFragment();
    for (const row of this.rows) row.circle = null;
    this.dots = this.rows.filter((r) => r.plottable).sort(byTime).map((r) => { const c = make(r, false); r.circle = c; frag.append(c); return [c, r]; });
    this.dotLayer.append(frag);
    this.arrows = [];
    if (this.baseline) {
      const arrowFrag = document.createDocumentFragment();
      for (const [, row] of this.dots) {
        const before = this.baseByKey.get(row.key);
        if (before && before.plottable && (Math.abs(before.lx - row.lx) > 1e-3 || Math.abs(before.ly - row.ly) > 1e-3)) {
          const line = svgEl('line', {class: 'arrow', 'marker-end': 'url(#rf-arrow)'});
          arrowFrag.append(line);
          this.arrows.push([line, before, row]);
        }
      }
      this.arrowLayer.append(arrowFrag);
    }
    this.positionMarks();
    this.highlightSelected(false);
  }

  /** Axes, roofs and every mark's position for the current domain (zoom/pan redraws only this). */
  positionMarks() {
    const {x0, x1, y0, y1} = this.domain;
    const {pw, ph} = this.geo;
    this.drawAxes();
    this.drawRoofs();
    for (const [c, r] of this.dots) { c.setAttribute('cx', this.px(r.lx).toFixed(1)); c.setAttribute('cy', this.py(r.ly).toFixed(1)); }
    for (const [c, r] of this.baseDots) { c.setAttribute('cx', this.px(r.lx).toFixed(1)); c.setAttribute('cy', this.py(r.ly).toFixed(1)); }
    for (const [line, a, b] of this.arrows) {
      line.setAttribute('x1', this.px(a.lx).toFixed(1)); line.setAttribute('y1', this.py(a.ly).toFixed(1));
      line.setAttribute('x2', this.px(b.lx).toFixed(1)); line.setAttribute('y2', this.py(b.ly).toFixed(1));
    }
    this.drawRing();
    const fmtAxis = (v) => String(+(10 ** v).toPrecision(3));
    this.xMin.value = fmtAxis(x0); this.xMax.value = fmtAxis(x1);
    this.yMin.value = (10 ** y0).toExponential(2); this.yMax.value = (10 ** y1).toExponential(2);
    void pw; void ph;
  }

  drawAxes() {
    const {x0, x1, y0, y1} = this.domain;
    const {pw, ph} = this.geo;
    const layer = this.axesLayer;
    const nodes = [];
    const bottom = MARGIN.top + ph;
    const ticks = (lo, hi) => {
      const first = Math.ceil(lo - 1e-9);
      const last = Math.floor(hi + 1e-9);
      const stride = Math.max(1, Math.ceil((last - first + 1) / 10));
      const out = [];
      for (let k = first; k <= last; k += stride) out.push(k);
      return out;
    };
    for (const k of ticks(x0, x1)) {
      const x = this.px(k);
      nodes.push(svgEl('line', {class: 'rf-grid', x1: x, x2: x, y1: MARGIN.top, y2: bottom}));
      const label = svgEl('text', {class: 'rf-tick', x, y: bottom + 16, 'text-anchor': 'middle'});
      label.textContent = tickLabel(k, 'FLOP/B');
      nodes.push(label);
    }
    for (const k of ticks(y0, y1)) {
      const y = this.py(k);
      nodes.push(svgEl('line', {class: 'rf-grid', x1: MARGIN.left, x2: MARGIN.left + pw, y1: y, y2: y}));
      const label = svgEl('text', {class: 'rf-tick', x: MARGIN.left - 6, y: y + 4, 'text-anchor': 'end'});
      label.textContent = tickLabel(k, 'FLOP/s');
      nodes.push(label);
    }
    nodes.push(svgEl('rect', {class: 'rf-frame', x: MARGIN.left, y: MARGIN.top, width: pw, height: ph}));
    const xTitle = svgEl('text', {class: 'rf-axis-title', x: MARGIN.left + pw / 2, y: bottom + 38, 'text-anchor': 'middle'});
    xTitle.textContent = 'arithmetic intensity (FLOP/B)';
    const yTitle = svgEl('text', {class: 'rf-axis-title', transform: `translate(16 ${MARGIN.top + ph / 2}) rotate(-90)`, 'text-anchor': 'middle'});
    yTitle.textContent = 'achieved FLOP/s';
    nodes.push(xTitle, yTitle);
    layer.replaceChildren(...nodes);
  }

  drawRoofs() {
    const {x0, x1, y0} = this.domain;
    const nodes = [];
    const usable = this.report.roofs.filter((r) => r.peak !== null && r.peak > 0 && r.bandwidth !== null && r.bandwidth > 0);
    usable.forEach((roof, i) => {
      const colour = ROOF_COLOURS[i % ROOF_COLOURS.length];
      const ridge = roof.ridge ?? roof.peak / roof.bandwidth;
      const lp = Math.log10(roof.peak);
      const lb = Math.log10(roof.bandwidth);
      const lr = Math.log10(ridge);
      const xa = Math.min(x0 - 1, lr);
      const xb = Math.max(x1 + 1, lr);
      // Memory roof y = x * bandwidth until the ridge, then the flat compute roof.
      const points = [[xa, xa + lb], [lr, lp], [xb, lp]].map(([lx, ly]) => `${this.px(lx).toFixed(1)},${this.py(ly).toFixed(1)}`).join(' ');
      const measured = roof.source === 'measured';
      const line = svgEl('polyline', {class: 'rf-roof', points, stroke: colour, 'stroke-dasharray': measured ? 'none' : '7 4', opacity: roof.used ? 1 : 0.35});
      const title = svgEl('title');
      title.textContent = `${roof.dtype} ${roof.unit} roof (${roof.source}${roof.used ? '' : ', unused'}): peak ${si(roof.peak, 'FLOP/s')}, bandwidth ${si(roof.bandwidth, 'B/s')}, ridge ${plain(ridge)} FLOP/B`;
      line.append(title);
      const ridgeLine = svgEl('line', {class: 'rf-ridge', x1: this.px(lr), x2: this.px(lr), y1: this.py(lp), y2: this.py(y0), stroke: colour, opacity: roof.used ? 0.8 : 0.3});
      const label = svgEl('text', {class: 'rf-roof-label', x: MARGIN.left + this.geo.pw - 6, y: this.py(lp) - 5, 'text-anchor': 'end', fill: colour, opacity: roof.used ? 1 : 0.5});
      label.textContent = `${roof.dtype} ${roof.unit} · ${roof.source} · ${si(roof.peak, 'FLOP/s')} · ridge ${plain(ridge)}`;
      nodes.push(line, ridgeLine, label);
    });
    this.roofLayer.replaceChildren(...nodes);
  }

  scheduleReposition() {
    if (this.drawScheduled) return;
    this.drawScheduled = true;
    requestAnimationFrame(() => { this.drawScheduled = false; if (this.report) this.positionMarks(); });
  }

  installChartEvents() {
    const svg = this.svg;
    svg.addEventListener('pointerover', (event) => {
      const hit = this.circleRow && this.circleRow.get(event.target);
      if (hit) this.showTooltip(hit.row, hit.baseline, event);
    });
    svg.addEventListener('pointermove', (event) => {
      if (!this.tooltip.hidden) this.placeTooltip(event);
    });
    svg.addEventListener('pointerout', (event) => {
      if (this.circleRow && this.circleRow.has(event.target)) this.tooltip.hidden = true;
    });
    svg.addEventListener('click', (event) => {
      if (this.justDragged) { this.justDragged = false; return; }
      const hit = this.circleRow && this.circleRow.get(event.target);
      if (hit && !hit.baseline) this.select(hit.row.key, 'chart');
    });
    svg.addEventListener('wheel', (event) => {
      if (!this.domain || !this.geo) return;
      event.preventDefault();
      const box = svg.getBoundingClientRect();
      const fx = (event.clientX - box.left - MARGIN.left) / this.geo.pw;
      const fy = 1 - (event.clientY - box.top - MARGIN.top) / this.geo.ph;
      const factor = Math.exp(Math.max(-0.5, Math.min(0.5, event.deltaY * 0.002)));
      const d = this.domain;
      const cx = d.x0 + fx * (d.x1 - d.x0);
      const cy = d.y0 + fy * (d.y1 - d.y0);
      this.domain = {x0: cx - (cx - d.x0) * factor, x1: cx + (d.x1 - cx) * factor, y0: cy - (cy - d.y0) * factor, y1: cy + (d.y1 - cy) * factor};
      this.scheduleReposition();
    }, {passive: false});
    let drag = null;
    svg.addEventListener('pointerdown', (event) => {
      if (event.button !== 0 || !this.domain) return;
      drag = {x: event.clientX, y: event.clientY, domain: {...this.domain}, moved: false, id: event.pointerId};
    });
    svg.addEventListener('pointermove', (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) { drag.moved = true; svg.setPointerCapture(drag.id); this.tooltip.hidden = true; }
      const d = drag.domain;
      const sx = dx / this.geo.pw * (d.x1 - d.x0);
      const sy = dy / this.geo.ph * (d.y1 - d.y0);
      this.domain = {x0: d.x0 - sx, x1: d.x1 - sx, y0: d.y0 + sy, y1: d.y1 + sy};
      this.scheduleReposition();
    });
    const end = () => { if (drag && drag.moved) this.justDragged = true; drag = null; };
    svg.addEventListener('pointerup', end);
    svg.addEventListener('pointercancel', end);
  }

  applyAxisInputs() {
    const read = (input) => Number(input.value);
    const [a, b, c, d] = [read(this.xMin), read(this.xMax), read(this.yMin), read(this.yMax)];
    if (![a, b, c, d].every((v) => Number.isFinite(v) && v > 0) || a >= b || c >= d) {
      this.showMessage('Axis ranges must be positive numbers with min < max, e.g. intensity 0.1 – 1000, FLOP/s 1e9 – 1e13.', 'warning');
      return;
    }
    this.showMessage('', 'info');
    this.domain = {x0: Math.log10(a), x1: Math.log10(b), y0: Math.log10(c), y1: Math.log10(d)};
    this.positionMarks();
  }

  showTooltip(row, baseline, event) {
    const lines = [
      ['', `${baseline ? 'baseline: ' : ''}${row.display}`],
      ...(row.level === 'op' ? [['op', row.op]] : []),
      ['type', row.type], ['phase', row.phase], ['calls', count(row.calls)],
      ['FLOPs', si(row.flops, 'FLOP')], ['bytes', si(row.bytes, 'B')], ['intensity', `${plain(row.intensity)} FLOP/B`],
      ['achieved', si(row.achieved, 'FLOP/s')], ['attainable', si(row.attainable, 'FLOP/s')],
      ['efficiency', pct(row.efficiency)], ['bound', row.bound + (row.suspect ? ' (suspect: above its roof)' : '')],
      ['time', si(row.time, 's')], ['time lost', si(row.timeLost, 's')], ['roof', row.roof],
    ];
    const before = !baseline && this.baseByKey ? this.baseByKey.get(row.key) : null;
    if (before) lines.push(['baseline time', si(before.time, 's')], ['baseline eff.', pct(before.efficiency)]);
    const nodes = lines.map(([label, value]) => (label
      ? el('div', {}, [el('span', {className: 'rf-tip-label', textContent: `${label}: `}), el('span', {textContent: value})])
      : el('div', {className: 'rf-tip-title', textContent: value})));
    this.tooltip.replaceChildren(...nodes);
    this.tooltip.hidden = false;
    this.placeTooltip(event);
  }

  placeTooltip(event) {
    const box = this.chartBox.getBoundingClientRect();
    let x = event.clientX - box.left + 14;
    let y = event.clientY - box.top + 14;
    if (x + 300 > box.width) x = Math.max(0, x - 330);
    if (y + 300 > CHART_HEIGHT) y = Math.max(0, y - 300);
    this.tooltip.style.left = `${x}px`;
    this.tooltip.style.top = `${y}px`;
  }

  // -- selection ------------------------------------------------------------

  select(key, from) {
    this.state.selectedKey = this.state.selectedKey === key ? null : key;
    if (from === 'chart' && this.state.selectedKey !== null) {
      const index = this.tableRows.findIndex((r) => r.key === key);
      if (index >= this.state.tableLimit) { this.state.tableLimit = index + 1; this.drawTable(); }
    }
    this.highlightSelected(from === 'chart');
  }

  highlightSelected(scroll) {
    const key = this.state.selectedKey;
    if (this.selectedCircle) this.selectedCircle.classList.remove('sel');
    if (this.selectedRow) this.selectedRow.classList.remove('sel');
    this.selectedCircle = this.selectedRow = null;
    const row = key === null ? null : this.rows.find((r) => r.key === key);
    if (!row) { this.drawRing(); return; }
    if (row.circle) {
      row.circle.classList.add('sel');
      this.selectedCircle = row.circle;
    }
    this.drawRing();
    if (row.tr) {
      row.tr.classList.add('sel');
      this.selectedRow = row.tr;
      if (scroll) row.tr.scrollIntoView({block: 'nearest'});
    }
  }

  /** A ring above every dot marks the selected one (the dots keep their DOM order). */
  drawRing() {
    if (!this.ringLayer) return;
    const c = this.selectedCircle;
    if (!c) { this.ringLayer.replaceChildren(); return; }
    const ring = svgEl('circle', {class: 'rf-ring', cx: c.getAttribute('cx'), cy: c.getAttribute('cy'), r: (Number(c.getAttribute('r')) + 3).toFixed(2)});
    this.ringLayer.replaceChildren(ring);
  }

  // -- table ----------------------------------------------------------------

  columns() {
    const cols = [
      {key: 'display', label: this.state.level === 'op' ? 'module' : 'module', text: (r) => r.display, cls: 'rf-name'},
      ...(this.state.level === 'op' ? [{key: 'op', label: 'op', text: (r) => r.op}] : []),
      {key: 'type', label: 'type', text: (r) => r.type},
      {key: 'phase', label: 'phase', text: (r) => r.phase},
      {key: 'depth', label: 'depth', text: (r) => count(r.depth), numeric: true},
      {key: 'calls', label: 'calls', text: (r) => count(r.calls), numeric: true},
      {key: 'flops', label: 'FLOPs', text: (r) => si(r.flops, 'FLOP'), numeric: true},
      {key: 'bytes', label: 'bytes', text: (r) => si(r.bytes, 'B'), numeric: true},
      {key: 'intensity', label: 'FLOP/B', text: (r) => plain(r.intensity), numeric: true},
      {key: 'achieved', label: 'achieved', text: (r) => si(r.achieved, 'FLOP/s'), numeric: true},
      {key: 'attainable', label: 'attainable', text: (r) => si(r.attainable, 'FLOP/s'), numeric: true},
      {key: 'efficiency', label: 'efficiency', text: (r) => pct(r.efficiency), numeric: true},
      {key: 'bound', label: 'bound', text: (r) => r.bound},
      {key: 'time', label: 'time', text: (r) => si(r.time, 's'), numeric: true},
      {key: 'timeLost', label: 'time lost', text: (r) => si(r.timeLost, 's'), numeric: true},
    ];
    if (this.baseline) {
      cols.push({key: 'deltaTime', label: 'Δ time vs baseline', numeric: true,
        value: (r) => { const b = this.baseByKey.get(r.key); return b && r.time !== null && b.time !== null ? r.time - b.time : null; },
        text: (r) => { const b = this.baseByKey.get(r.key); return b && r.time !== null && b.time !== null ? si(r.time - b.time, 's') : UNKNOWN; }});
    }
    return cols;
  }

  drawTable() {
    const cols = this.columns();
    const sortCol = cols.find((c) => c.key === this.state.sortKey) || cols.find((c) => c.key === 'time');
    const value = sortCol.value || ((r) => r[sortCol.key]);
    const dir = this.state.sortDesc ? -1 : 1;
    const sorted = [...this.rows].sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (va === null || va === undefined) return (vb === null || vb === undefined) ? 0 : 1; // unknowns last
      if (vb === null || vb === undefined) return -1;
      return (sortCol.numeric ? va - vb : String(va).localeCompare(String(vb))) * dir;
    });
    this.tableRows = sorted;
    const head = el('tr', {}, cols.map((c) => {
      const arrow = c.key === sortCol.key ? (this.state.sortDesc ? ' ▼' : ' ▲') : '';
      const th = el('th', {textContent: c.label + arrow, className: c.numeric ? 'rf-num' : '', title: 'sort'});
      th.addEventListener('click', () => {
        if (this.state.sortKey === c.key) this.state.sortDesc = !this.state.sortDesc;
        else { this.state.sortKey = c.key; this.state.sortDesc = !!c.numeric; }
        this.drawTable();
      });
      return th;
    }));
    const body = el('tbody');
    for (const row of this.rows) row.tr = null;
    const limit = Math.min(sorted.length, this.state.tableLimit);
    for (let i = 0; i < limit; i += 1) {
      const row = sorted[i];
      const tr = el('tr', {className: row.plottable ? '' : 'rf-unplotted'});
      for (const c of cols) tr.append(el('td', {textContent: c.text(row), className: `${c.numeric ? 'rf-num' : ''} ${c.cls || ''}`}));
      tr.addEventListener('click', () => this.select(row.key, 'table'));
      row.tr = tr;
      body.append(tr);
    }
    this.table.replaceChildren(el('thead', {}, [head]), body);
    const hidden = this.rows.filter((r) => !r.plottable).length;
    this.tableNote.textContent = `${this.rows.length} ${this.state.level === 'op' ? 'op' : 'module'} rows · ${this.dots ? this.dots.length : 0} on the chart`
      + (hidden ? ` (${hidden} without FLOPs, bytes or time are listed, not drawn)` : '') + ' · click a row or a dot to link them';
    this.moreButton.hidden = limit >= sorted.length;
    this.moreButton.textContent = `Show all ${sorted.length} rows`;
    this.highlightSelected(false);
  }
}

// ---------------------------------------------------------------------------- pure helpers

function fillSelect(select, options, wanted) {
  const nodes = options.map(([value, text]) => el('option', {value, textContent: text}));
  select.replaceChildren(...nodes);
  const values = options.map(([value]) => value);
  if (wanted !== null && wanted !== undefined && values.includes(String(wanted))) select.value = String(wanted);
  else if (values.length) select.value = values[0];
}

function computeDomain(rows, roofs) {
  const xs = [];
  const ys = [];
  for (const r of rows) if (r.plottable) { xs.push(r.lx); ys.push(r.ly); }
  for (const roof of roofs) {
    if (roof.peak && roof.bandwidth) { xs.push(Math.log10(roof.ridge ?? roof.peak / roof.bandwidth)); ys.push(Math.log10(roof.peak)); }
  }
  if (!xs.length) return {x0: -2, x1: 3, y0: 8, y1: 13};
  const lo = (v) => v.reduce((a, b) => Math.min(a, b), Infinity);
  const hi = (v) => v.reduce((a, b) => Math.max(a, b), -Infinity);
  let [x0, x1, y0, y1] = [lo(xs) - 0.5, hi(xs) + 0.5, lo(ys) - 0.5, hi(ys) + 0.3];
  if (x1 - x0 < 1) { x0 -= 0.5; x1 += 0.5; }
  if (y1 - y0 < 1) { y0 -= 0.5; y1 += 0.5; }
  return {x0, x1, y0, y1};
}

function sameDomain(a, b) {
  return ['x0', 'x1', 'y0', 'y1'].every((k) => Math.abs(a[k] - b[k]) < 1e-9);
}

// ---------------------------------------------------------------------------- entry point

export async function render() {
  const tab = new RooflineTab(document.body);
  try {
    await tab.start();
  } catch (err) {
    tab.fail(`The Roofline tab failed: ${err && err.message ? err.message : err}`);
  }
}

// For tests and the benchmark script only.
export const _internal = {parseReport, si, computeDomain};
