// A dashboard as a PNG: log in, open the dashboard, wait for the charts, capture.
//   node screenshot.js http://127.0.0.1:PORT out.png [SLUG]   (default: books)
const { chromium } = require('playwright-core');

(async () => {
  const [base, out, slug = 'books'] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${base}/login/`);
  await page.fill('input[name="username"], #username', 'admin');
  await page.fill('input[name="password"], #password', 'admin');
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
  await page.goto(`${base}/superset/dashboard/${slug}/?standalone=1`, { waitUntil: 'networkidle' });
  // A loaded machine (the test command runs tests side by side on 2 cores) can take minutes.
  await page.waitForSelector('.dashboard-chart', { timeout: 180000 });
  await page.waitForTimeout(5000); // let the charts finish drawing
  await page.screenshot({ path: out, fullPage: true });
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
