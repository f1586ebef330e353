import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export type Provider = 'cpu' | 'cuda';

export const CUDA_INSTALL_HINT =
  'on a CUDA 12 host install it with `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12`';

/** onnxruntime-node ships the CPU provider; the CUDA provider library is installed separately. */
export function cudaProviderInstalled(): boolean {
  const require = createRequire(import.meta.url);
  const pkgDir = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const binDir = path.join(pkgDir, 'bin', 'napi-v6', process.platform, process.arch);
  return existsSync(path.join(binDir, 'libonnxruntime_providers_cuda.so'));
}

/**
 * The provider a version actually gets. Asking for CUDA where it is absent fails the deployment
 * with instructions, unless the version allows falling back to the CPU.
 */
export function resolveProvider(wanted: Provider, fallback: Provider | undefined, where: string): { provider: Provider; note: string | null } {
  if (wanted !== 'cuda' || cudaProviderInstalled()) return { provider: wanted, note: null };
  if (fallback === 'cpu') {
    return { provider: 'cpu', note: `${where}: the CUDA execution provider is not installed; running on the CPU (provider_fallback: "cpu")` };
  }
  throw new Error(`${where}: provider "cuda" was asked for but the CUDA execution provider is not installed; ${CUDA_INSTALL_HINT}, or set provider_fallback: "cpu"`);
}
