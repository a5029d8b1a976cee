// Publishes over WHIP from headless Chromium with a fake camera and microphone
// (--use-fake-device-for-media-stream): getUserMedia video+audio, H.264 preferred with
// setCodecPreferences, the offer POSTed with the stream key as bearer from a page on
// ANOTHER origin (a loopback HTTP server of this script on its own port) so the CORS preflight
// and the exposed Location are exercised. Prints the page's state as one JSON line every
// 500 ms. Commands on stdin: `delete` (DELETE the session, then close the connection),
// `kill` (SIGKILL Chromium: no DELETE, the server must notice on its own).
// Usage: node whip.mjs WHIP_URL?key=KEY [SECONDS]
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';

const [whipArg, seconds] = [process.argv[2], Number(process.argv[3] || 120)];
const whipUrl = new URL(whipArg);
const key = whipUrl.searchParams.get('key');
whipUrl.searchParams.delete('key');

const html = `<!doctype html><meta charset="utf-8"><title>WHIP</title><video muted autoplay></video>
<script>
window.whip = { state: 'starting' };
window.startWhip = async (url, key) => {
  const w = window.whip;
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 360, frameRate: 30 }, audio: true });
    const pc = new RTCPeerConnection();
    w.pc = pc;
    const video = pc.addTransceiver(media.getVideoTracks()[0], { direction: 'sendonly' });
    pc.addTransceiver(media.getAudioTracks()[0], { direction: 'sendonly' });
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const h264 = codecs.filter(c => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
    w.h264Available = h264.length > 0;
    if (!h264.length) throw new Error('this Chromium cannot send H.264: ' + codecs.map(c => c.mimeType).join(','));
    video.setCodecPreferences([...h264, ...codecs.filter(c => c.mimeType !== 'video/H264')]);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(resolve => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 3000);
    });
    w.state = 'offering';
    const response = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
      headers: { 'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + key } });
    w.status = response.status;
    w.location = response.headers.get('Location');
    w.contentType = response.headers.get('Content-Type');
    const answer = await response.text();
    if (response.status !== 201) throw new Error('POST answered ' + response.status + ': ' + answer);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    w.state = 'answered';
  } catch (e) {
    w.state = 'error';
    w.error = String(e);
  }
};
window.deleteWhip = async () => {
  const w = window.whip;
  const response = await fetch(new URL(w.location, w.endpoint), { method: 'DELETE' });
  w.deleteStatus = response.status;
  w.pc.close();
  w.state = 'deleted';
};
window.whipSummary = async () => {
  const w = window.whip;
  const out = { state: w.state, status: w.status, location: w.location, contentType: w.contentType,
    error: w.error, deleteStatus: w.deleteStatus, h264Available: w.h264Available };
  if (w.pc && w.state !== 'deleted') {
    out.connection = w.pc.connectionState;
    const stats = await w.pc.getStats();
    const codecs = {};
    stats.forEach(s => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    stats.forEach(s => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.framesEncoded = s.framesEncoded; out.videoCodec = codecs[s.codecId]; out.nacks = s.nackCount; out.plis = s.pliCount;
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') { out.audioPackets = s.packetsSent; out.audioCodec = codecs[s.codecId]; }
    });
  }
  return out;
};
</script>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'],
});
const pageServer = createServer((_, response) => {
  response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  response.end(html);
});
await new Promise(resolve => pageServer.listen(0, '127.0.0.1', resolve));
const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
const page = await browser.newPage();
page.on('pageerror', error => console.error('page error:', error.message));
await page.goto(`${pageOrigin}/publish.html`);
await page.evaluate(({ url }) => { window.whip.endpoint = url; }, { url: whipUrl.href });
page.evaluate(({ url, key }) => window.startWhip(url, key), { url: whipUrl.href, key });

let running = true;
createInterface({ input: process.stdin }).on('line', async line => {
  if (line.trim() === 'delete') await page.evaluate(() => window.deleteWhip());
  if (line.trim() === 'kill') {
    running = false;
    console.log(JSON.stringify({ state: 'killed' }));
    process.kill(browser.process().pid, 'SIGKILL');
    process.exit(0);
  }
}).on('close', () => { running = false; });

const deadline = Date.now() + seconds * 1000;
while (running && Date.now() < deadline) {
  console.log(JSON.stringify(await page.evaluate(() => window.whipSummary())));
  await new Promise(resolve => setTimeout(resolve, 500));
}
if (running || Date.now() >= deadline) await browser.close().catch(() => {});
process.exit(0);
