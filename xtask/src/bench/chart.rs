//! PNG bar charts of a metric's variants: the median as the bar, min–max
//! as an error bar, goals as dashed lines. Text is drawn with DejaVu Sans
//! (Debian's fonts-dejavu-core, which `cargo xtask setup` installs) through
//! plotters' ab_glyph backend, so no fontconfig is needed.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub struct Bar {
    pub label: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
        // plotters keeps the font for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!("{e} (fonts-dejavu-core; `cargo xtask setup` installs it)"))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x2b, 0x6c, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
];

/// Draws `bars` with `lines` (value, label) as dashed horizontal lines.
pub fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[Bar],
    lines: &[(f64, String)],
) -> anyhow::Result<()> {
    register_font()?;
    let n = bars.len().max(1);
    let top = bars
        .iter()
        .map(|b| b.max)
        .chain(lines.iter().map(|(v, _)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        // Head room for the legend of the goal lines.
        * if lines.is_empty() { 1.15 } else { 1.4 };
    let width = (180 + 150 * n as u32).max(640);
    let root = BitMapBackend::new(path, (width, 420)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(|x| e(&x))?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| super::goals::number(*v))
        .y_desc(unit)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.median),
                ],
                COLORS[i % COLORS.len()].filled(),
            );
            r.set_margin(0, 0, 18, 18);
            r
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                b.min,
                b.median,
                b.max,
                BLACK.stroke_width(2),
                12,
            )
        }))
        .map_err(|x| e(&x))?;
    for (value, label) in lines {
        let style = RED.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (SegmentValue::Exact(0), *value),
                    (SegmentValue::Last, *value),
                ],
                8,
                5,
                style,
            ))
            .map_err(|x| e(&x))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
    }
    if !lines.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present()
        .map_err(|x| e(&x))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        let dir = std::env::temp_dir().join(format!("kh-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let bars = [
            Bar {
                label: "keyhole".into(),
                median: 3.7,
                min: 3.5,
                max: 3.9,
            },
            Bar {
                label: "wireguard-go".into(),
                median: 0.4,
                min: 0.38,
                max: 0.41,
            },
        ];
        draw(&path, "TCP", "Gbit/s", &bars, &[(1.2, "goal".into())]).unwrap();
        let png = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 2_000, "{} bytes", png.len());
    }
}
