// Screenshot of the Roofline tab for the README (docs/roofline-tab.png); not a test.
//
// Usage: node screenshot.mjs http://127.0.0.1:PORT/#roofline out.png [compare]
//   with "compare": step 0 is drawn as the baseline of the newest step.
// Needs a running tensorboard whose log directory holds roofline reports.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {chromium} from 'playwright-core';

const [url, out, compare] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'roofline-shot-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  viewport: {width: 1400, height: 1050},
});
try {
  const page = context.pages()[0] || await context.newPage();
  await page.goto(url);
  const frame = await (await page.waitForSelector('iframe')).contentFrame();
  await frame.waitForSelector('#roofline-root[data-state="ready"]', {timeout: 30000});
  if (compare === 'compare') {
    await frame.check('#compare-toggle');
    await frame.selectOption('#compare-step-select', '0');
    await frame.waitForFunction(() => document.querySelectorAll('#roofline-chart circle.cmp').length > 0);
  }
  await frame.locator('#roofline-chart circle.dot').nth(3).hover();
  await page.waitForTimeout(300);
  await page.screenshot({path: out});
} finally {
  await context.close();
  fs.rmSync(profile, {recursive: true, force: true});
}
