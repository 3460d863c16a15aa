// Loads a report page in headless Chromium (Debian's, via playwright-core), the way a user at a
// 1366x768 screen sees it: counts the verdict chips inside the first screen, screenshots it,
// opens the first chip's cell and screenshots the panel. Prints one JSON line. Used by
// ci/check_report_browser.py; takes: <page url> <out dir> <chromium path>.
import { chromium } from 'playwright-core';

const [url, outDir, executablePath] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  await page.goto(url);
  const firstScreen = await page.evaluate(() => {
    const inView = [...document.querySelectorAll('a.chip')].filter(a => {
      const r = a.getBoundingClientRect();
      return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 && r.right <= window.innerWidth;
    });
    return { chips: document.querySelectorAll('a.chip').length, visible: inView.length,
             verdicts: [...new Set(inView.map(a => a.className.match(/v-([A-Z-]+)/)[1]))].sort() };
  });
  await page.screenshot({ path: `${outDir}/first-screen.png` });
  let panel = null;
  const chip = await page.$('a.chip.v-FAILED') || await page.$('a.chip');
  if (chip) {
    const cell = await chip.getAttribute('data-cell');
    await chip.click();
    panel = await page.evaluate(() => {
      const p = document.getElementById('panel');
      return { open: p.classList.contains('open'), text: p.innerText.slice(0, 400) };
    });
    panel.cell = cell;
    await page.screenshot({ path: `${outDir}/opened-cell.png` });
  }
  console.log(JSON.stringify({ firstScreen, panel }));
} finally {
  await browser.close();
}
