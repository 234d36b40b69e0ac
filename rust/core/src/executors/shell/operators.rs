//! Finding shell operators a command holds outside quotes. Without `shell`, a command is split
//! into words and exec'd: `echo one && echo two` would print `one && echo two` here while Dkron's
//! splitter stops at the `&&` and runs `echo one`. Such a command is refused when the job loads.

/// The first operator (`&&`, `||`, `;`, `&`, `|`, `<`, `>`, `>>`, `<<`) outside quotes, or None.
/// Quoting follows POSIX: single quotes take everything literally, double quotes and a
/// backslash outside quotes escape what follows.
pub fn first_unquoted_operator(command: &str) -> Option<&'static str> {
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => {
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            ';' => return Some(";"),
            '&' | '|' | '<' | '>' => {
                let doubled = chars.peek() == Some(&c);
                return Some(match (c, doubled) {
                    ('&', true) => "&&",
                    ('&', false) => "&",
                    ('|', true) => "||",
                    ('|', false) => "|",
                    ('<', true) => "<<",
                    ('<', false) => "<",
                    ('>', true) => ">>",
                    _ => ">",
                });
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_unquoted_operator as op;

    #[test]
    fn operators_outside_quotes_are_found() {
        assert_eq!(op("echo one && echo two"), Some("&&"));
        assert_eq!(op("date || true"), Some("||"));
        assert_eq!(op("echo a; echo b"), Some(";"));
        assert_eq!(op("sleep 1 &"), Some("&"));
        assert_eq!(op("ls | wc -l"), Some("|"));
        assert_eq!(op("sort < in"), Some("<"));
        assert_eq!(op("echo hi >out"), Some(">"));
        assert_eq!(op("echo hi 2>>log"), Some(">>"));
        assert_eq!(op("a'quoted'|b"), Some("|"));
    }

    #[test]
    fn quoted_or_escaped_operators_are_fine() {
        assert_eq!(op("echo 'one && two'"), None);
        assert_eq!(op("echo \"a; b | c > d\""), None);
        assert_eq!(op(r"echo a\;b \& c\>d"), None);
        assert_eq!(op(r#"echo "say \"x\" & y""#), None);
        assert_eq!(op("echo 'it''s' done"), None);
        assert_eq!(op("/bin/true"), None);
    }
}
