//! The benchmark's picture: leases per second and median latency against offered load,
//! one line per server, as a self-contained SVG (no fonts or scripts to fetch). Both axes
//! are logarithmic: the servers differ by orders of magnitude.

use std::fmt::Write as _;

/// One server's measured steps: (offered per second, leases per second, p50 µs).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#7f7f7f", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd",
];
const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const MARGIN: f64 = 60.0;

/// Decades covering every positive value, at least one.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

struct Panel {
    x0: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Panel {
    fn at(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x.log10() - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y.log10() - self.y.0) / (self.y.1 - self.y.0);
        (self.x0 + fx * PANEL_W, MARGIN + PANEL_H - fy * PANEL_H)
    }

    fn frame(&self, svg: &mut String, title: &str, x_label: &str) {
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{MARGIN}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="black"/>"#,
            self.x0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{title}</text>"#,
            self.x0 + PANEL_W / 2.0,
            MARGIN - 12.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{x_label}</text>"#,
            self.x0 + PANEL_W / 2.0,
            MARGIN + PANEL_H + 36.0
        );
        for d in self.x.0 as i32..=self.x.1 as i32 {
            let (x, _) = self.at(10f64.powi(d), 10f64.powf(self.y.0));
            let _ = writeln!(
                svg,
                r##"<line x1="{x}" y1="{MARGIN}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle" font-size="11">1e{d}</text>"##,
                MARGIN + PANEL_H,
                MARGIN + PANEL_H + 16.0
            );
        }
        for d in self.y.0 as i32..=self.y.1 as i32 {
            let (_, y) = self.at(10f64.powf(self.x.0), 10f64.powi(d));
            let _ = writeln!(
                svg,
                r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" font-size="11">1e{d}</text>"##,
                self.x0,
                self.x0 + PANEL_W,
                self.x0 - 6.0,
                y + 4.0
            );
        }
    }

    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str) {
        let mut points = points.to_vec();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pts: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
            .map(|&(x, y)| {
                let (px, py) = self.at(x, y);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
    }
}

pub fn svg(series: &[Series<'_>]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x = decades(all().map(|p| p.0));
    let left = Panel {
        x0: MARGIN,
        x,
        y: decades(all().map(|p| p.1)),
    };
    let right = Panel {
        x0: 2.0 * MARGIN + PANEL_W + 20.0,
        x,
        y: decades(all().map(|p| p.2)),
    };
    let width = right.x0 + PANEL_W + MARGIN;
    let legend_y = MARGIN + PANEL_H + 60.0;
    let height = legend_y + 20.0 * series.len() as f64 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    left.frame(
        &mut out,
        "leases per second",
        "offered exchanges per second",
    );
    right.frame(
        &mut out,
        "median exchange latency (µs)",
        "offered exchanges per second",
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let served: Vec<_> = s.points.iter().map(|p| (p.0, p.1)).collect();
        let latency: Vec<_> = s.points.iter().map(|p| (p.0, p.2)).collect();
        left.line(&mut out, &served, colour);
        right.line(&mut out, &latency, colour);
        let y = legend_y + 20.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{MARGIN}" y="{}" width="14" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            y - 4.0,
            MARGIN + 20.0,
            y,
            s.name
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_gets_a_line_and_a_legend() {
        let s = [
            Series {
                name: "a",
                points: vec![(1000.0, 990.0, 50.0), (2000.0, 1900.0, 80.0)],
            },
            Series {
                name: "b",
                points: vec![(50.0, 48.0, 300000.0)],
            },
        ];
        let svg = svg(&s);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(">a</text>") && svg.contains(">b</text>"));
        assert!(!svg.contains("NaN"));
    }
}
