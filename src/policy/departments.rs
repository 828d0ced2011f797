//! The accounts' departments as a tree: `sales/emea` is a sub-department of `sales`, as
//! `archive search --department sales` takes it (pure).
//!
//! Departments are compared as the search compares them: ASCII case ignored, surrounding
//! space and a trailing `/` ignored. Each is shown as its first account (in file order) wrote it.

use serde::Serialize;

use super::Policy;

/// One department, with its sub-departments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Department {
    /// The last element of its path, as first written (`emea`).
    pub name: String,
    /// The whole path, as `archive search --department` takes it (`sales/emea`).
    pub path: String,
    /// Accounts in this department and its sub-departments (what `--department` selects).
    pub accounts: usize,
    /// Sub-departments, by name.
    pub sub: Vec<Department>,
}

/// The departments of the accounts whose department is `departments` (one item per account),
/// as a forest of trees, each level sorted by name (ignoring case). A department that no
/// account names but a sub-department implies (`sales` for `sales/emea`) is in the tree too.
pub fn tree<'a>(departments: impl IntoIterator<Item = &'a str>) -> Vec<Department> {
    let mut roots: Vec<Department> = Vec::new();
    for written in departments {
        let trimmed = written.trim();
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let mut level = &mut roots;
        let mut path = String::new();
        for element in trimmed.split('/').map(str::trim).filter(|e| !e.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&element.to_ascii_lowercase());
            let at = match level.iter().position(|d| d.path == path) {
                Some(i) => i,
                None => {
                    level.push(Department {
                        name: element.to_string(),
                        path: path.clone(),
                        accounts: 0,
                        sub: Vec::new(),
                    });
                    level.len() - 1
                }
            };
            level[at].accounts += 1;
            level = &mut level[at].sub;
        }
    }
    sort(&mut roots);
    roots
}

fn sort(level: &mut [Department]) {
    level.sort_by(|a, b| a.path.cmp(&b.path));
    for d in level {
        sort(&mut d.sub);
    }
}

/// The tree as lines: `name (accounts)`, each sub-department two spaces further in.
pub fn lines(tree: &[Department]) -> Vec<String> {
    fn walk(level: &[Department], depth: usize, out: &mut Vec<String>) {
        for d in level {
            out.push(format!(
                "{:width$}{} ({})",
                "",
                d.name,
                d.accounts,
                width = 2 * depth
            ));
            walk(&d.sub, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(tree, 0, &mut out);
    out
}

impl Policy {
    /// The accounts' departments as a tree (see [`tree`]).
    pub fn departments(&self) -> Vec<Department> {
        tree(self.accounts.iter().filter_map(|a| a.department.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_departments_sit_under_their_parent_with_the_accounts_of_both() {
        let t = tree([
            "Sales",
            "sales/emea",
            "sales/EMEA/north ",
            "hr",
            "sales/apac/",
            "it/ops",
            "sales/emea",
        ]);
        assert_eq!(
            lines(&t),
            [
                "hr (1)",
                "it (1)",
                "  ops (1)",
                "Sales (5)",
                "  apac (1)",
                "  emea (3)",
                "    north (1)",
            ]
        );
        let sales = &t[2];
        assert_eq!(sales.sub[1].path, "sales/emea");
        assert_eq!(sales.sub[1].sub[0].path, "sales/emea/north");
        // `it` is implied by `it/ops`: no account names it, its one account is in ops.
        assert_eq!((t[1].accounts, t[1].sub[0].accounts), (1, 1));
    }

    #[test]
    fn no_department_no_tree_and_empty_elements_are_ignored() {
        assert_eq!(tree([]), []);
        assert_eq!(tree(["", " / "]), []);
        assert_eq!(lines(&tree(["a//b"])), ["a (1)", "  b (1)"]);
    }
}
