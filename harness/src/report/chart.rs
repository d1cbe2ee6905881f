//! `latency.svg`: the latency breakdown as grouped bars, one group per hop in the order a request
//! crosses them, p50, p90 and p99 side by side, drawn with `plotters` into an SVG any browser
//! opens.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::checks::LatencyBreakdown;

const SIZE: (u32, u32) = (900, 480);
/// p50, p90, p99.
const COLORS: [RGBColor; 3] = [
    RGBColor(66, 133, 244),
    RGBColor(251, 188, 5),
    RGBColor(234, 67, 53),
];
const BAR_WIDTH: f64 = 0.25;

pub(crate) fn svg(latency: &LatencyBreakdown) -> Result<String> {
    let hops = latency.hops();
    let values = |index: usize| -> [f64; 3] {
        let p = hops[index].1;
        [p.p50, p.p90, p.p99]
    };
    let highest = (0..hops.len())
        .flat_map(values)
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        let draw = |e: DrawingAreaErrorKind<_>| anyhow!("drawing latency.svg: {e:?}");
        root.fill(&WHITE).map_err(draw)?;
        let caption = format!(
            "Where the time of {} × {} goes (ms)",
            latency.requests, latency.request
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hops.len() as f64, 0.0..highest * 1.15)
            .map_err(draw)?;
        let names: Vec<&str> = hops.iter().map(|(name, _)| *name).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(hops.len() * 2 + 1)
            .x_label_formatter(&|x| {
                // Labels sit at the middle of each group.
                let index = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 && index < names.len() {
                    names[index].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("milliseconds")
            .draw()
            .map_err(draw)?;
        for (rank, label) in ["p50", "p90", "p99"].into_iter().enumerate() {
            let color = COLORS[rank];
            chart
                .draw_series((0..hops.len()).map(|index| {
                    let left = index as f64 + 0.125 + rank as f64 * BAR_WIDTH;
                    Rectangle::new(
                        [(left, 0.0), (left + BAR_WIDTH * 0.9, values(index)[rank])],
                        color.filled(),
                    )
                }))
                .map_err(draw)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw)?;
        root.present().map_err(draw)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::latency::Percentiles;

    fn p(p50: f64) -> Percentiles {
        Percentiles {
            p50,
            p90: p50 * 2.0,
            p99: p50 * 3.0,
        }
    }

    #[test]
    fn the_chart_is_an_svg_with_every_hop_and_percentile() {
        let latency = LatencyBreakdown {
            request: "POST /fft?numSamples=1024".into(),
            requests: 200,
            round_trip_ms: p(2.0),
            gateway_overhead_ms: p(0.4),
            sidecar_and_network_ms: p(0.3),
            app_handling_ms: p(0.2),
            fft_ms: p(0.1),
            notes: vec![],
        };
        let svg = svg(&latency).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for label in [
            "gateway overhead",
            "sidecar + network",
            "app handling",
            "FFT",
            "p50",
            "p90",
            "p99",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        // 4 hops × 3 percentiles, plus the background and the legend's boxes.
        assert!(svg.matches("<rect").count() >= 12, "{svg}");
    }
}
