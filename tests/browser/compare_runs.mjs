// The Roofline tab's compare mode across two runs, in headless Chromium (playwright-core):
// shows run `config.run`, ticks "Compare with baseline", picks run `config.baselineRun`,
// and prints what the chart drew at module and op level as one JSON line. It asserts
// nothing itself: tests/sinks/test_tensorboard_browser.py compares it with the two reports.
//
// Usage: node compare_runs.mjs '<json config>'
//   config: {url, chromium, userDataDir, run, baselineRun, screenshot, timeoutMs}

import {observe} from './harness.mjs';

const config = JSON.parse(process.argv[2]);
const observed = {};

async function marks(frame) {
  const names = (selector) => frame.locator(selector).evaluateAll((els) => els.map((e) => e.getAttribute('data-name')));
  return {
    dots: await names('#roofline-chart circle.dot'),
    baselineDots: await names('#roofline-chart circle.cmp'),
    arrows: await frame.locator('#roofline-chart line.arrow').count(),
  };
}

await observe(config, observed, async (page, frame) => {
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
});
