/// Clips cut from recorded CMAF (`streamcdn_media::progressive::build`), over arbitrary
/// bytes: the first two bytes give the init segment's length (big-endian), the init
/// segment follows, then fragments, split where the byte after the init says; the
/// span comes from the last byte. Whatever the input, an error or a progressive MP4
/// that starts with `ftyp`, never a panic. Needs `build` and `Cut` in scope.
pub fn check(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let split = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 3);
    let (init, rest) = data[2..].split_at(split);
    let (&pieces, rest) = rest.split_first().unwrap_or((&1, &[]));
    let (&span, rest) = rest.split_last().unwrap_or((&0, &[]));
    // Up to four fragments, cut at even shares of the rest (a box may straddle two).
    let count = usize::from(pieces % 4) + 1;
    let share = rest.len() / count + 1;
    let fragments: Vec<&[u8]> = rest.chunks(share).collect();
    let cut = Cut {
        start_secs: f64::from(span >> 4) / 4.0,
        end_secs: f64::from(span >> 4) / 4.0 + f64::from(span & 15) / 2.0,
    };
    if let Ok(clip) = build(init, &fragments, cut) {
        assert_eq!(clip.bytes.get(4..8), Some(&b"ftyp"[..]));
        assert!(clip.duration_secs.is_finite() && clip.duration_secs >= 0.0);
    }
}
