// What every browser script of tests/sinks/test_tensorboard_browser.py shares: headless Chromium
// (playwright-core, Debian's /usr/bin/chromium) on the Roofline tab, a watchdog, and one JSON
// line of observations printed at the end (with `ok`, or `fatal` and what was seen before).
//
// Usage: await observe(config, observed, async (page, frame) => { ... fill observed ... });
//   config: {url, chromium, userDataDir, timeoutMs}; observed gets consoleErrors, pageErrors,
//   dialogs (dismissed) and frameUrl.

import {chromium} from 'playwright-core';

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function observe(config, observed, body) {
  Object.assign(observed, {consoleErrors: [], pageErrors: [], dialogs: []});
  const watchdog = setTimeout(() => {
    console.log(JSON.stringify({...observed, fatal: 'watchdog: the script ran out of time'}));
    process.exit(2);
  }, config.timeoutMs);
  let context;
  try {
    context = await chromium.launchPersistentContext(config.userDataDir, {
      executablePath: config.chromium, headless: true, args: FLAGS, viewport: {width: 1400, height: 1000},
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('dialog', async (dialog) => { observed.dialogs.push(dialog.message()); await dialog.dismiss(); });
    page.on('console', (msg) => { if (msg.type() === 'error') observed.consoleErrors.push(msg.text()); });
    page.on('pageerror', (err) => observed.pageErrors.push(String(err)));
    await page.goto(config.url, {waitUntil: 'domcontentloaded'});
    const frame = await (await page.waitForSelector('iframe', {timeout: 30000})).contentFrame();
    observed.frameUrl = frame.url();
    await frame.waitForSelector('#roofline-root[data-state="ready"]', {timeout: 30000});
    await body(page, frame);
    observed.ok = true;
  } catch (err) {
    observed.fatal = String(err && err.stack ? err.stack : err);
  } finally {
    clearTimeout(watchdog);
    if (context) await context.close();
  }
  console.log(JSON.stringify(observed));
}
