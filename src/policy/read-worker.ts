import { parentPort, workerData } from 'node:worker_threads';
import { FileValidationError } from '../config/validate.js';
import { readPolicyFiles } from './load.js';

// Runs readPolicyFiles for loadPolicyDirOffThread; the validated data crosses back by structured clone.
const { dir } = workerData as { dir: string };
try {
  parentPort!.postMessage({ files: readPolicyFiles(dir) });
} catch (err) {
  if (err instanceof FileValidationError) parentPort!.postMessage({ problems: err.problems });
  else parentPort!.postMessage({ error: (err as Error).message });
}
