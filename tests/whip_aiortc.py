"""A second, independent WHIP client: aiortc (PyPI) publishes a media file over WHIP.

The file is decoded and re-encoded by aiortc (H.264 forced with setCodecPreferences,
Opus audio), the offer POSTed with the stream key as bearer (non-trickle: aiortc gathers
its candidates first), the answer applied; after SECONDS the session is DELETEd.
Prints one JSON line: the POST's status, the connection state reached, DELETE's status.

Usage: python3 whip_aiortc.py WHIP_URL KEY FILE SECONDS
"""
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def main(url, key, path, seconds):
    result = {}
    player = MediaPlayer(path)
    pc = RTCPeerConnection()
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        result["connection"] = pc.connectionState
        if pc.connectionState == "connected":
            connected.set()

    video = pc.addTransceiver(player.video, direction="sendonly")
    pc.addTransceiver(player.audio, direction="sendonly")
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    video.setCodecPreferences(h264)
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, headers, answer = await loop.run_in_executor(
        None,
        lambda: request(
            "POST",
            url,
            pc.localDescription.sdp.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        ),
    )
    result["status"] = status
    if status != 201:
        result["error"] = answer
        print(json.dumps(result), flush=True)
        return 1
    location = urllib.parse.urljoin(url, headers.get("Location") or headers.get("location"))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        await asyncio.wait_for(connected.wait(), 15)
    except asyncio.TimeoutError:
        result["error"] = "not connected"
    await asyncio.sleep(seconds)
    status, _, _ = await loop.run_in_executor(None, lambda: request("DELETE", location))
    result["delete"] = status
    await pc.close()
    print(json.dumps(result), flush=True)
    return 0 if result.get("connection") in ("connected", "closed") and status == 200 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))))
