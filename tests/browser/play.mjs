// Plays an HLS URL with hls.js in headless Chromium until `seconds` of media have played
// or a fatal error occurs; prints the player's state as JSON; exits 0 only on success.
// Usage: node play.mjs PAGE_URL SECONDS [SCREENSHOT.png]
import { chromium } from 'playwright-core';

const [pageUrl, seconds, screenshot] = [process.argv[2], Number(process.argv[3] || 6), process.argv[4]];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage();
await page.goto(pageUrl);
const deadline = Date.now() + 40000;
let state;
while (Date.now() < deadline) {
  state = await page.evaluate(() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
    return { t: v.currentTime, dropped: q.droppedVideoFrames, w: v.videoWidth, h: v.videoHeight, ...window.playerState };
  });
  if (state.fatal || state.t >= seconds) break;
  await new Promise(r => setTimeout(r, 250));
}
if (screenshot) await page.screenshot({ path: screenshot });
console.log(JSON.stringify(state));
await browser.close();
process.exit(state && !state.fatal && state.t >= seconds ? 0 : 1);
