//! Terminal output shared by the planning commands: the format switch, reason names, tables.

use std::fmt::Write as _;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The serde name of a reason or status (`no_destination`), as in the JSON output.
pub fn snake<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Aligned columns, each row followed by its detail, indented (a line each; none when empty).
pub fn table<const N: usize>(
    out: &mut String,
    header: [&str; N],
    rows: &[[String; N]],
    details: &[&str],
) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header));
    for (i, row) in rows.iter().enumerate() {
        let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
        for detail in details.get(i).copied().unwrap_or_default().lines() {
            let _ = writeln!(out, "    {detail}");
        }
    }
}
