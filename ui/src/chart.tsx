// A time-series chart drawn by uPlot: one x axis of Unix seconds and one line per series.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  color: string;
}

/** Draws `data` (`[times, ...values]`, one array per series) and redraws when it changes. */
export function Chart({ title, series, data, unit }: { title: string; series: Series[]; data: number[][]; unit: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: element.clientWidth,
      height: 180,
      series: [{}, ...series.map(({ label, color }) => ({ label, stroke: color, width: 2 }))],
      axes: [{ stroke: "currentColor" }, { stroke: "currentColor", label: unit, size: 56 }],
      legend: { live: false },
    };
    plot.current = new uPlot(options, data as uPlot.AlignedData, element);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: element.clientWidth, height: 180 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // The chart is built once per series layout; new data only redraws it (below).
  }, [series.map((s) => s.label).join()]);
  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={title} />
    </figure>
  );
}
