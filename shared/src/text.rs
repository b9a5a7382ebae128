//! Text for messages.

/// Shortens a user-supplied value for an error message, so a 1 MB id does not become a 1 MB log line.
pub fn clip(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        value.to_string()
    } else {
        let mut end = MAX;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &value[..end], value.len())
    }
}
