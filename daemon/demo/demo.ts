// placeholder replaced below
export async function runDemo(_opts: { requests: number; keep: boolean }): Promise<void> {
  throw new Error('demo not built yet');
}
