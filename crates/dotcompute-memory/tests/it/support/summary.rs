//! Reading `MemoryManager::memory_summary` tables.

/// The cells of the first row of `summary` whose metric starts with `metric`, metric first.
pub fn row(summary: &str, metric: &str) -> Vec<String> {
    let line = summary
        .lines()
        .find(|l| l.trim_start_matches('|').trim_start().starts_with(metric))
        .unwrap_or_else(|| panic!("no row `{metric}` in\n{summary}"));
    line.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
}
