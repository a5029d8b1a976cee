//! Log lines as an operator's collector reads them: written to a file (here, the test's
//! log file, as journald or `> file` would), text lines carry no colour codes, and
//! `log.format = "json"` gives one JSON object per line.

mod common;

use common::*;

#[test]
fn text_logs_to_a_file_have_no_colour_codes_and_json_logs_parse_line_by_line() {
    let text = Node::up("log-text", "");
    let log = text.log_text();
    assert!(log.contains(" INFO "), "no INFO line:\n{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file:\n{log}");
    drop(text);

    let json = Node::up("log-json", "[log]\nformat = \"json\"\n");
    let log = json.log_text();
    // The file holds standard error too, where `up`'s banner goes with JSON logs.
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 3, "too few lines:\n{log}");
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n--- log ---\n{log}"));
        assert!(
            event["level"].is_string()
                && event["message"].is_string()
                && event["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"INFO\"")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in JSON logs:\n{log}");
}
