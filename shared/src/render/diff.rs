//! A line diff of two texts in unified format (what `GET /v1/templates/{id}/diff`
//! shows per field). Longest common subsequence over lines; inputs too large for that
//! are shown as one replaced block.

/// Cells of the LCS table beyond which a diff is shown as one block.
const MAX_CELLS: usize = 4_000_000;
const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// The unified diff of `a` and `b` (empty when they are equal).
pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    if a == b {
        return String::new();
    }
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let ops = edit_script(&a, &b);
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    // Group into hunks with CONTEXT lines around changes.
    let n = ops.len();
    let changed: Vec<usize> = (0..n).filter(|&i| ops[i].0 != Op::Same).collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut end = (changed[i] + CONTEXT + 1).min(n);
        while i + 1 < changed.len() && changed[i + 1] <= end + CONTEXT {
            i += 1;
            end = (changed[i] + CONTEXT + 1).min(n);
        }
        let (mut a_line, mut b_line) = (1, 1);
        for (op, _) in &ops[..start] {
            match op {
                Op::Same => {
                    a_line += 1;
                    b_line += 1;
                }
                Op::Del => a_line += 1,
                Op::Add => b_line += 1,
            }
        }
        let a_len = ops[start..end]
            .iter()
            .filter(|(o, _)| *o != Op::Add)
            .count();
        let b_len = ops[start..end]
            .iter()
            .filter(|(o, _)| *o != Op::Del)
            .count();
        out.push_str(&format!("@@ -{a_line},{a_len} +{b_line},{b_len} @@\n"));
        for (op, line) in &ops[start..end] {
            out.push(match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            });
            out.push_str(line);
            out.push('\n');
        }
        i += 1;
    }
    out
}

fn edit_script<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    // Common prefix and suffix first: most edits touch a few lines.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let am = &a[prefix..a.len() - suffix];
    let bm = &b[prefix..b.len() - suffix];
    let mut ops: Vec<(Op, &str)> = a[..prefix].iter().map(|l| (Op::Same, *l)).collect();
    if (am.len() + 1) * (bm.len() + 1) > MAX_CELLS {
        ops.extend(am.iter().map(|l| (Op::Del, *l)));
        ops.extend(bm.iter().map(|l| (Op::Add, *l)));
    } else {
        let w = bm.len() + 1;
        let mut t = vec![0u32; (am.len() + 1) * w];
        for i in (0..am.len()).rev() {
            for j in (0..bm.len()).rev() {
                t[i * w + j] = if am[i] == bm[j] {
                    t[(i + 1) * w + j + 1] + 1
                } else {
                    t[(i + 1) * w + j].max(t[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < am.len() && j < bm.len() {
            if am[i] == bm[j] {
                ops.push((Op::Same, am[i]));
                i += 1;
                j += 1;
            } else if t[(i + 1) * w + j] >= t[i * w + j + 1] {
                ops.push((Op::Del, am[i]));
                i += 1;
            } else {
                ops.push((Op::Add, bm[j]));
                j += 1;
            }
        }
        ops.extend(am[i..].iter().map(|l| (Op::Del, *l)));
        ops.extend(bm[j..].iter().map(|l| (Op::Add, *l)));
    }
    ops.extend(a[a.len() - suffix..].iter().map(|l| (Op::Same, *l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_lines_with_context() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n";
        let d = unified(a, b, "v1", "v2");
        assert_eq!(
            d,
            "--- v1\n+++ v2\n@@ -2,8 +2,9 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n 9\n+10\n"
        );
        assert_eq!(unified(a, a, "v1", "v2"), "");
    }
}
