// Drives the Roofline tab of a running TensorBoard in headless Chromium (playwright-core,
// Debian's /usr/bin/chromium) and prints what it saw as one JSON line. It asserts
// nothing itself: tests/sinks/test_tensorboard_browser.py compares the observations with the
// numbers of the report it wrote.
//
// Usage: node roofline_tab.mjs '<json config>'
//   config: {url, chromium, userDataDir, screenshot, compareScreenshot, run, bigRun, brokenRun,
//            xssName, hoverStep, timeoutMs}

import {observe} from './harness.mjs';

const config = JSON.parse(process.argv[2]);
const observed = {steps: []};

async function ready(frame, extra = '') {
  await frame.waitForSelector(`#roofline-root[data-state="ready"]${extra}`, {timeout: 30000});
}

async function dotCount(frame) {
  return frame.locator('#roofline-chart circle.dot').count();
}

await observe(config, observed, async (page, frame) => {
  // The first run and its newest step are shown first; go to the demo run, step 0.
  await frame.selectOption('#run-select', config.run);
  await frame.selectOption('#step-select', '0');
  await ready(frame, '[data-step="0"]');
  observed.steps.push({step: 0, dots: await dotCount(frame)});
  observed.runOptions = await frame.locator('#run-select option').allTextContents();
  observed.totalsText = await frame.locator('#roofline-totals').textContent();

  // Hover the topmost dot (the last one drawn) and read its tooltip.
  const last = frame.locator('#roofline-chart circle.dot').last();
  observed.hoveredName = await last.getAttribute('data-name');
  await last.hover();
  await frame.waitForSelector('#roofline-tooltip:not([hidden])', {timeout: 5000});
  observed.tooltip = await frame.locator('#roofline-tooltip').textContent();

  // Table row -> dot, and dot -> table row.
  await frame.locator('#roofline-table tbody tr').nth(1).click();
  observed.rowToDot = {
    row: await frame.locator('#roofline-table tbody tr.sel td').first().textContent(),
    dot: await frame.locator('#roofline-chart circle.dot.sel').getAttribute('data-name'),
  };
  await frame.locator('#roofline-chart circle.dot').last().click();
  observed.dotToRow = {
    dot: await frame.locator('#roofline-chart circle.dot.sel').getAttribute('data-name'),
    row: await frame.locator('#roofline-table tbody tr.sel td').first().textContent(),
  };

  // Wheel zoom changes the axis range inputs.
  const before = await frame.inputValue('#x-min');
  const box = await frame.locator('#roofline-chart').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.wheel(0, -300);
  await page.waitForTimeout(200);
  observed.zoom = {before, after: await frame.inputValue('#x-min')};
  await frame.click('#reset-view');

  // Switch step.
  await frame.selectOption('#step-select', '1');
  await ready(frame, '[data-step="1"]');
  observed.steps.push({step: 1, dots: await dotCount(frame)});

  // XSS: the module name is text, and nothing was injected.
  observed.xss = await frame.evaluate((name) => ({
    imgInFrame: document.querySelectorAll('img').length,
    cellsWithName: [...document.querySelectorAll('#roofline-table td')].filter((td) => td.textContent === name).length,
    dotsWithName: [...document.querySelectorAll('#roofline-chart circle.dot')].filter((c) => c.getAttribute('data-name') === name).length,
    onerrorAttributes: document.querySelectorAll('[onerror]').length,
  }), config.xssName);
  observed.xss.imgInPage = await page.evaluate(() => document.querySelectorAll('img[src="x"]').length);
  await page.screenshot({path: config.screenshot});

  // Compare step 1 with step 0: hollow baseline dots and arrows for moved modules.
  await frame.check('#compare-toggle');
  await frame.selectOption('#compare-step-select', '0');
  await ready(frame, '[data-step="1"]');
  await frame.waitForFunction(() => document.querySelectorAll('#roofline-chart circle.cmp').length > 0, null, {timeout: 10000});
  observed.compare = {
    baselineDots: await frame.locator('#roofline-chart circle.cmp').count(),
    arrows: await frame.locator('#roofline-chart line.arrow').count(),
  };
  await page.screenshot({path: config.compareScreenshot});
  await frame.uncheck('#compare-toggle');
  await ready(frame);

  // Op level.
  await frame.selectOption('#level-select', 'op');
  await frame.waitForFunction(() => document.querySelector('#level-select').value === 'op');
  observed.opDots = await dotCount(frame);
  await frame.selectOption('#level-select', 'module');

  // Corrupt and foreign payloads: an error message, not a blank page.
  await frame.selectOption('#run-select', config.brokenRun);
  await frame.selectOption('#step-select', '0');
  await frame.waitForSelector('#roofline-root[data-state="error"]', {timeout: 15000});
  observed.corruptMessage = await frame.locator('#roofline-message').textContent();
  await frame.selectOption('#step-select', '1');
  await frame.waitForFunction(() => /not a torch_roofline report/.test(document.querySelector('#roofline-message').textContent), null, {timeout: 15000});
  observed.foreignMessage = await frame.locator('#roofline-message').textContent();

  // The 10,000-module report renders (time printed by the test, never asserted).
  await frame.selectOption('#run-select', config.bigRun);
  await ready(frame, `[data-run="${config.bigRun}"]`);
  observed.bigDots = await dotCount(frame);
  observed.bigRenderMs = Number(await frame.getAttribute('#roofline-root', 'data-render-ms'));

  // The refresh button reloads and shows the same view again.
  await frame.click('#refresh-button');
  await ready(frame, `[data-run="${config.bigRun}"]`);
  observed.afterRefreshDots = await dotCount(frame);
});
