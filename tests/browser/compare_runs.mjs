// The Roofline tab's compare mode across two runs, in headless Chromium (playwright-core):
// shows run `config.run`, ticks "Compare with baseline", picks run `config.baselineRun`,
// and prints what the chart drew at module and op level as one JSON line. It asserts
// nothing itself: tests/test_tensorboard_browser.py compares it with the two reports.
//
// Usage: node compare_runs.mjs '<json config>'
//   config: {url, chromium, userDataDir, run, baselineRun, screenshot, timeoutMs}

import {chromium} from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const observed = {consoleErrors: [], pageErrors: []};
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({...observed, fatal: 'watchdog: the script ran out of time'}));
  process.exit(2);
}, config.timeoutMs);

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function marks(frame) {
  const names = (selector) => frame.locator(selector).evaluateAll((els) => els.map((e) => e.getAttribute('data-name')));
  return {
    dots: await names('#roofline-chart circle.dot'),
    baselineDots: await names('#roofline-chart circle.cmp'),
    arrows: await frame.locator('#roofline-chart line.arrow').count(),
  };
}

let context;
try {
  context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium, headless: true, args: FLAGS, viewport: {width: 1400, height: 1000},
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => { if (msg.type() === 'error') observed.consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => observed.pageErrors.push(String(err)));
  await page.goto(config.url, {waitUntil: 'domcontentloaded'});
  const frame = await (await page.waitForSelector('iframe', {timeout: 30000})).contentFrame();
  await frame.waitForSelector('#roofline-root[data-state="ready"]', {timeout: 30000});

  await frame.selectOption('#run-select', config.run);
  await frame.waitForSelector(`#roofline-root[data-state="ready"][data-run="${config.run}"]`, {timeout: 30000});
  await frame.check('#compare-toggle');
  await frame.selectOption('#compare-run-select', config.baselineRun);
  await frame.selectOption('#compare-step-select', '0');
  // Ticking the box first draws the current run's own other step as the baseline: wait for this one.
  await frame.waitForFunction((label) => document.querySelector('#roofline-root').dataset.state === 'ready'
    && document.querySelector('.rf-legend').textContent.includes(label), `baseline ${config.baselineRun} · step 0`,
    {timeout: 15000});
  observed.legend = await frame.locator('.rf-legend').textContent();
  observed.module = await marks(frame);
  await page.screenshot({path: config.screenshot});

  await frame.selectOption('#level-select', 'op');
  await frame.waitForFunction(() => document.querySelector('#level-select').value === 'op'
    && document.querySelector('#roofline-root').dataset.state === 'ready');
  observed.op = await marks(frame);
  observed.ok = true;
} catch (err) {
  observed.fatal = String(err && err.stack ? err.stack : err);
} finally {
  clearTimeout(watchdog);
  if (context) await context.close();
}
console.log(JSON.stringify(observed));
