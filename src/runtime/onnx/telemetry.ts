/**
 * ONNX Runtime 1.30's Linux and macOS builds collect usage telemetry for Microsoft (1DS) unless
 * told not to: a device id and an event cache under ~/.cache/Microsoft/DeveloperTools/.onnxruntime,
 * an uploader, and an empty /tmp/mat-debug-<pid>.log per process. A gateway running other
 * people's models keeps that off unless its operator asks for it (ORT_DISABLE_TELEMETRY=0).
 * ONNX Runtime reads the variable once, when the library initialises, and worker threads see
 * the process environment, so this module is imported before anything that loads onnxruntime-node.
 */
if (process.env.ORT_DISABLE_TELEMETRY === undefined) process.env.ORT_DISABLE_TELEMETRY = '1';

export {};
