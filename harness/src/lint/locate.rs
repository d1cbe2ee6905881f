//! The line of a field inside a YAML document, so that a finding points an editor at the exact
//! place rather than at the start of the resource.
//!
//! Field paths are those of [`super::Finding::field`]: keys separated by `.`, list positions as
//! `[n]`, keys that contain dots as `[prometheus.io/port]`. The search follows the block
//! indentation of the text; for flow style (`{a: 1}`) it stops at the enclosing key.

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(field: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let mut rest = field;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else { break };
            let token = &inner[..close];
            steps.push(match token.parse() {
                Ok(index) => Step::Index(index),
                Err(_) => Step::Key(token),
            });
            rest = &inner[close + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end > 0 {
                steps.push(Step::Key(&rest[..end]));
            }
            rest = &rest[end..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    steps
}

/// Indentation of a line, and the column where its content starts after any `- ` markers.
fn columns(line: &str) -> (usize, usize, &str) {
    let indent = line.len() - line.trim_start().len();
    let mut column = indent;
    let mut content = &line[indent..];
    while let Some(rest) = content.strip_prefix("- ") {
        let spaces = rest.len() - rest.trim_start().len();
        column += 2 + spaces;
        content = rest.trim_start();
    }
    (indent, column, content)
}

fn is_blank(content: &str) -> bool {
    content.is_empty() || content.starts_with('#')
}

fn has_key(content: &str, key: &str) -> bool {
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|k| content.starts_with(k.as_str()))
}

/// The 0-based index among `lines[start..end]` (one document) of the deepest part of `field`
/// that can be found.
pub(crate) fn field_line(lines: &[&str], start: usize, end: usize, field: &str) -> usize {
    let end = end.min(lines.len());
    let mut found = start;
    // The column the current node's children must be deeper than (-1: the document root).
    let mut parent: isize = -1;
    let mut search_from = start;
    for step in steps(field) {
        let next = match step {
            Step::Key(key) => find_key(lines, search_from, end, parent, key),
            Step::Index(index) => find_item(lines, search_from, end, parent, index),
        };
        let Some((line, column)) = next else {
            break;
        };
        found = line;
        parent = column as isize;
        search_from = line;
    }
    found
}

fn find_key(
    lines: &[&str],
    from: usize,
    end: usize,
    parent: isize,
    key: &str,
) -> Option<(usize, usize)> {
    for (i, line) in lines.iter().enumerate().take(end).skip(from) {
        let (indent, column, content) = columns(line);
        if is_blank(content) {
            continue;
        }
        if i > from && indent as isize <= parent {
            return None;
        }
        if column as isize > parent && has_key(content, key) {
            return Some((i, column));
        }
    }
    None
}

fn find_item(
    lines: &[&str],
    from: usize,
    end: usize,
    parent: isize,
    index: usize,
) -> Option<(usize, usize)> {
    let mut item_indent = None;
    let mut count = 0;
    for (i, line) in lines.iter().enumerate().take(end).skip(from + 1) {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if is_blank(trimmed) {
            continue;
        }
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        // A sequence may sit at its key's own column (`ports:\n- port: 80`).
        if (indent as isize) < parent || (!is_item && indent as isize <= parent) {
            return None;
        }
        if !is_item {
            continue;
        }
        match item_indent {
            None => item_indent = Some(indent),
            Some(known) if indent > known => continue,
            Some(known) if indent < known => return None,
            Some(_) => {}
        }
        if count == index {
            return Some((i, indent));
        }
        count += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: svc
spec:
  selector:
    app: a
  ports:
    - name: http
      port: 8000
      targetPort: 8080
    - name: metrics
      port: 9000
      targetPort: 9090
---
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    metadata:
      annotations:
        prometheus.io/port: \"8080\"
    spec:
      containers:
      - name: app
        image: fft:1
";

    fn line_of(field: &str, start: usize) -> usize {
        let lines: Vec<&str> = DOC.lines().collect();
        field_line(&lines, start, lines.len(), field) + 1
    }

    #[test]
    fn finds_keys_and_list_items() {
        assert_eq!(line_of("spec.ports[0].targetPort", 0), 11);
        assert_eq!(line_of("spec.ports[1].targetPort", 0), 14);
        assert_eq!(line_of("spec.ports[1]", 0), 12);
        assert_eq!(line_of("spec.selector", 0), 6);
        assert_eq!(line_of("metadata.name", 0), 4);
    }

    #[test]
    fn compact_sequences_and_dotted_keys() {
        assert_eq!(line_of("spec.template.spec.containers[0].image", 15), 26);
        assert_eq!(
            line_of("spec.template.metadata.annotations[prometheus.io/port]", 15),
            22
        );
    }

    #[test]
    fn a_missing_field_falls_back_to_its_deepest_parent() {
        assert_eq!(line_of("spec.ports[5].targetPort", 0), 8);
        assert_eq!(line_of("metadata.labels", 0), 3);
        assert_eq!(line_of("spec.nothing", 15), 18);
    }
}
