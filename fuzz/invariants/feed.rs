/// A low-latency feed as a tier reads it from its parent (`FeedDecoder`), read in pieces
/// of `len % 61 + 1` bytes. It never panics, and whatever it accepts is what the encoder
/// writes: each decoded message, encoded again and decoded, comes back the same.
/// Needs `FeedDecoder`, `encode` and `MAGIC` in scope.
pub fn check(data: &[u8]) {
    let mut decoder = FeedDecoder::default();
    let mut messages = Vec::new();
    for piece in data.chunks(data.len() % 61 + 1) {
        match decoder.push(piece) {
            Ok(more) => messages.extend(more),
            Err(_) => break,
        }
    }
    let mut again = MAGIC.to_vec();
    for message in &messages {
        again.extend_from_slice(&encode(message));
    }
    let decoded = FeedDecoder::default()
        .push(&again)
        .expect("a re-encoded feed decodes");
    assert_eq!(decoded, messages, "re-encoding changed a message");
}
