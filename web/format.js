// LoRA Cloud: formatters for what the sidebar shows (money, durations, sizes, sample names).
// Pure functions, no DOM: tests/js runs them under Node. No side effects at import.

export const money = (usd) => (typeof usd === "number" && isFinite(usd) ? `$${usd.toFixed(2)}` : "–");

export function duration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  return minutes ? `${minutes}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

export function when(epochSeconds) {
  if (typeof epochSeconds !== "number" || !epochSeconds) return "";
  return new Date(epochSeconds * 1000).toLocaleString();
}

export const size = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.ceil(n / 1e3)} KB`);

// kohya names samples {name}_{000250 | e000002}_{prompt:02d}_{time}.png; ours may be s_0250.png
export function sampleKey(file) {
  const m = /_(e?)(\d{6})_(\d{2})_\d{8,}/.exec(file);
  if (m) return { key: `${m[1] ? "epoch" : "step"} ${Number(m[2])} · prompt ${Number(m[3])}`, order: Number(m[2]) * 100 + Number(m[3]) };
  const n = /(\d+)(?=\.[A-Za-z0-9]+$)/.exec(file);
  return n ? { key: `step ${Number(n[1])}`, order: Number(n[1]) * 100 } : { key: file, order: Infinity };
}
