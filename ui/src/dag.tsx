// A workflow's graph: each task a box coloured by its status, laid out left to right in the
// order they run by dagre, with an arrow from each task to those that wait for it.
import dagre from "@dagrejs/dagre";
import type { Task } from "./api";
import { href } from "./router";

const NODE_WIDTH = 170;
const NODE_HEIGHT = 48;

export function Dag({ tasks, dependencies }: { tasks: Record<string, Task>; dependencies: Record<string, string[]> }) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 8, marginy: 8 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const key of Object.keys(tasks)) graph.setNode(key, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const [key, parents] of Object.entries(dependencies)) {
    for (const parent of parents) graph.setEdge(parent, key);
  }
  dagre.layout(graph);
  const { width = 0, height = 0 } = graph.graph();
  return (
    <figure class="dag">
      <figcaption>Graph</figcaption>
      <div class="dag-scroll">
        <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="group" aria-label="The workflow's tasks and what each waits for">
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">
              <path d="M0,0 L10,5 L0,10 z" fill="currentColor" />
            </marker>
          </defs>
          {graph.edges().map((edge) => {
            const points: { x: number; y: number }[] = graph.edge(edge).points ?? [];
            const path = points.map((point, i) => `${i ? "L" : "M"}${point.x},${point.y}`).join(" ");
            return <path key={`${edge.v}-${edge.w}`} d={path} class="dag-edge" marker-end="url(#arrow)" />;
          })}
          {graph.nodes().map((key) => {
            const node = graph.node(key);
            const task = tasks[key];
            return (
              <a key={key} href={href("tasks", task.id)} class={`dag-node status-${task.status}`}>
                <rect x={node.x - NODE_WIDTH / 2} y={node.y - NODE_HEIGHT / 2} width={NODE_WIDTH} height={NODE_HEIGHT} rx="8" />
                <text x={node.x} y={node.y - 4} text-anchor="middle" class="dag-key">
                  {key}
                </text>
                <text x={node.x} y={node.y + 14} text-anchor="middle" class="dag-status">
                  {task.status}
                </text>
              </a>
            );
          })}
        </svg>
      </div>
    </figure>
  );
}
