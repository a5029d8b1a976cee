#!/usr/bin/env python3
"""A publisher that draws its capture wall-clock time into every frame, and a reader of it.

The code: `floor(unix time in ms) mod 2^32`, drawn by ffmpeg (drawbox with an `enable`
expression over `t`, while the frame's timestamp is the wall clock) as two rows of
square boxes near the top-left corner. Box size B = width // 40 (32 px at 1280x720, at
least 16 px from 640 px wide); box column c sits at x = B * (1 + c), the rows at y = B
and y = 2B. Column 0 is a marker (white over black), columns 1..32 are the bits, most
significant first (top white = 1, the bottom box always the opposite of the top), column
33 a marker (black over white). A reader accepts a frame only if every column is one
white and one black box, so a misread box is caught, not turned into a wrong time.
tests/browser/glass.html decodes the same layout in the browser.

Usage:
  stamp.py publish URL [--seconds S] [--size WxH] [--gop SECONDS] [--ffmpeg PATH]
      real-time lavfi source at 30 fps, x264 -tune zerolatency, AAC, FLV to URL (RTMP)
  stamp.py read INPUT
      decodes INPUT with ffmpeg and prints one JSON line per frame: {"frame", "code"}
      (code null when the boxes are not a valid code)
  stamp.py selftest [--seconds S] [--size WxH]
      runs the publisher's pipeline to a local FLV file and, from the same stamped
      frames, raw pictures read as they are made; prints JSON and exits 1 unless every
      raw code is valid, increasing and never later than the wall clock it arrived at
      (ffmpeg hands a frame out one frame after stamping it: two frames at the median),
      nine in ten are within a frame of the 30 fps wall-clock schedule, and every code
      read back from the H.264 file is the raw one
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

FPS = 30
BITS = 32
COLUMNS = BITS + 2


def box_size(width):
    size = width // 40
    if size < 16:
        raise SystemExit(f"width {width} is too small: boxes must be at least 16 px (640 px wide)")
    return size


def stamp_filter(width):
    """The filter chain (for -vf / -filter_complex) that stamps the wall clock."""
    b = box_size(width)
    boxes = [
        # The wall clock in microseconds as the frame's timestamp, so `t` is the time now.
        "settb=AVTB",
        "setpts=RTCTIME",
        # Both rows black, then the white boxes.
        f"drawbox=x={b}:y={b}:w={COLUMNS * b}:h={2 * b}:color=black:t=fill",
        f"drawbox=x={b}:y={b}:w={b}:h={b}:color=white:t=fill",
        f"drawbox=x={b * COLUMNS}:y={2 * b}:w={b}:h={b}:color=white:t=fill",
    ]
    for column in range(1, BITS + 1):
        bit = BITS - column
        value = f"mod(floor(t*1000/{2 ** bit}),2)"
        x = b * (1 + column)
        boxes.append(f"drawbox=x={x}:y={b}:w={b}:h={b}:color=white:t=fill:enable='eq({value},1)'")
        boxes.append(f"drawbox=x={x}:y={2 * b}:w={b}:h={b}:color=white:t=fill:enable='eq({value},0)'")
    # Back to a regular 30 fps timeline from zero for the encoder.
    boxes.append("setpts=N/FRAME_RATE/TB")
    return ",".join(boxes)


def strip_crop(width):
    """The crop that keeps just the boxes (what readers decode)."""
    b = box_size(width)
    return f"crop={b * (COLUMNS + 1)}:{3 * b}:0:0"


def decode_strip(rgb, width):
    """The code in one cropped RGB24 strip, or None when it is not a valid code."""
    b = box_size(width)
    stride = b * (COLUMNS + 1) * 3
    inset = b // 4

    def level(column, row):
        x0, y0 = b * (1 + column) + inset, b * (1 + row) + inset
        total = count = 0
        for y in range(y0, y0 + b - 2 * inset, 2):
            base = y * stride
            for x in range(x0, x0 + b - 2 * inset, 2):
                i = base + 3 * x
                total += rgb[i] + rgb[i + 1] + rgb[i + 2]
                count += 3
        return total / count

    def white(column, row):
        v = level(column, row)
        if 70 < v < 185:
            return None
        return v >= 185

    if (white(0, 0), white(0, 1), white(COLUMNS - 1, 0), white(COLUMNS - 1, 1)) != (True, False, False, True):
        return None
    code = 0
    for column in range(1, BITS + 1):
        top, bottom = white(column, 0), white(column, 1)
        if top is None or bottom is None or top == bottom:
            return None
        code = code * 2 + int(top)
    return code


def strip_bytes(width):
    b = box_size(width)
    return b * (COLUMNS + 1) * 3 * b * 3


def parse_size(text):
    w, h = text.lower().split("x")
    return int(w), int(h)


def source_args(size, seconds):
    w, h = size
    limit = ["-t", str(seconds)]
    return [
        "-re", *limit, "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={FPS}",
        "-re", *limit, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    ]


def encoder_args(gop):
    frames = str(round(gop * FPS))
    return [
        "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", frames, "-keyint_min", frames, "-sc_threshold", "0",
        "-b:v", "3M", "-maxrate", "3M", "-bufsize", "1M", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k",
    ]


def publish(args):
    size = parse_size(args.size)
    command = [args.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    command += source_args(size, args.seconds)
    command += ["-map", "0:v", "-map", "1:a", "-vf", stamp_filter(size[0])]
    command += encoder_args(args.gop)
    command += ["-flvflags", "no_duration_filesize", "-f", "flv", args.url]
    os.execvp(command[0], command)


def read_codes(ffmpeg, source, width):
    """Every frame's code (or None) of a media file or URL."""
    out = subprocess.Popen(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", source,
         "-map", "0:v", "-vf", strip_crop(width), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE,
    )
    size = strip_bytes(width)
    codes = []
    while True:
        frame = out.stdout.read(size)
        if len(frame) < size:
            break
        codes.append(decode_strip(frame, width))
    out.wait()
    return codes


def read(args):
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width",
         "-of", "csv=p=0", args.input], capture_output=True, text=True, check=True)
    width = int(probe.stdout.split()[0])
    for i, code in enumerate(read_codes(args.ffmpeg, args.input, width)):
        print(json.dumps({"frame": i, "code": code}))


def selftest(args):
    size = parse_size(args.size)
    frame_ms = 1000 / FPS
    with tempfile.TemporaryDirectory() as tmp:
        flv = os.path.join(tmp, "stamped.flv")
        # One stamped stream, split: raw boxes to stdout (timed on arrival) and the
        # publisher's encoding to a file.
        graph = (f"[0:v]{stamp_filter(size[0])},split[enc][raw];"
                 f"[raw]{strip_crop(size[0])}[strip]")
        command = [args.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
        command += source_args(size, args.seconds)
        command += ["-filter_complex", graph]
        command += ["-map", "[enc]", "-map", "1:a"] + encoder_args(args.gop) + ["-f", "flv", flv]
        command += ["-map", "[strip]", "-f", "rawvideo", "-pix_fmt", "rgb24", "-flush_packets", "1", "pipe:1"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, bufsize=0)
        need = strip_bytes(size[0])
        raw = []  # (code, arrival ms)
        buf = bytearray()
        while True:
            chunk = proc.stdout.read(need - len(buf))
            if not chunk:
                break
            buf += chunk
            if len(buf) == need:
                arrived = time.time() * 1000
                raw.append((bytes(buf), arrived))
                buf.clear()
        if proc.wait() != 0:
            raise SystemExit("ffmpeg failed")
        raw = [(decode_strip(frame, size[0]), arrived) for frame, arrived in raw]
        encoded = read_codes(args.ffmpeg, flv, size[0])

    problems = []
    invalid_raw = sum(1 for code, _ in raw if code is None)
    if invalid_raw:
        problems.append(f"{invalid_raw} raw frames without a valid code")
    # Arrival minus code, modulo 2^32 as the page computes it. ffmpeg hands a frame to
    # its outputs when it reads the next one, so a frame arrives one frame after it was
    # stamped: the lag is that frame (publisher latency, counted in glass to glass), plus
    # the encoder's time on the split branch.
    lags = [((arrived - code) % 2 ** 32) for code, arrived in raw if code is not None]
    future = [lag for lag in lags if lag > 2 ** 31]
    if future:
        problems.append(f"{len(future)} codes later than the wall clock they arrived at")
    lags.sort()
    if lags and lags[len(lags) // 2] > 2 * frame_ms:
        problems.append(f"median arrival {lags[len(lags) // 2]:.1f} ms after the code: more than two frames")
    # The codes follow the wall-clock schedule of a 30 fps real-time source within a
    # frame (after the first frames, which ffmpeg reads at once while starting). A
    # starved ffmpeg makes a frame late and stamps it late, as it should: so nine in ten
    # on schedule, not all.
    codes = [code for code, _ in raw]
    schedule = [(code - k * frame_ms) for k, code in enumerate(codes) if code is not None][5:]
    base = sorted(schedule)[len(schedule) // 2] if schedule else 0
    off = [s - base for s in schedule if abs(s - base) > frame_ms]
    if len(off) * 10 > len(schedule):
        problems.append(f"{len(off)} of {len(schedule)} frames stamped more than a frame off the 30 fps "
                        f"wall-clock schedule: {off[:5]}")
    steps = [b - a for (a, _), (b, _) in zip(raw, raw[1:]) if a is not None and b is not None]
    if any(step <= 0 for step in steps):
        problems.append(f"codes do not increase frame by frame: {steps}")
    if encoded != codes:
        mismatched = sum(1 for a, b in zip(encoded, codes) if a != b)
        problems.append(f"H.264 codes differ from the raw ones: {len(encoded)} vs {len(codes)} frames, "
                        f"{mismatched} differ")
    report = {
        "frames": len(raw),
        "encoded_frames": len(encoded),
        "lag_ms_median": lags[len(lags) // 2] if lags else None,
        "lag_ms_max": lags[-1] if lags else None,
        "schedule_ms_max_off": max((abs(s - base) for s in schedule), default=None),
        "frames_off_schedule": len(off),
        "step_ms_min": min(steps) if steps else None,
        "step_ms_max": max(steps) if steps else None,
        "problems": problems,
    }
    print(json.dumps(report))
    sys.exit(1 if problems or not raw else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ffmpeg", default="ffmpeg")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish")
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--gop", type=float, default=1)
    p.set_defaults(run=publish)
    r = sub.add_parser("read")
    r.add_argument("input")
    r.set_defaults(run=read)
    s = sub.add_parser("selftest")
    s.add_argument("--seconds", type=float, default=3)
    s.add_argument("--size", default="1280x720")
    s.add_argument("--gop", type=float, default=1)
    s.set_defaults(run=selftest)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
