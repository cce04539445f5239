/**
 * Browser audio for Coda: the microphone (AudioWorklet -> 16 kHz PCM16 chunks) and the player that
 * schedules the spoken answer's chunks back to back as they arrive.
 */

export const MIC_SAMPLE_RATE = 16000;

/** A readable reason why the microphone cannot be used, from a getUserMedia failure. */
export function microphoneProblem(error) {
  const name = error?.name || "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was denied. Allow it in the browser's site settings, then try again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Connect one, or type your message instead.";
  }
  if (name === "NotReadableError") {
    return "The microphone is busy or unavailable (another application may be using it).";
  }
  return `The microphone could not be opened: ${error?.message || error}`;
}

export class Microphone {
  /**
   * @param {object} handlers
   * @param {(pcm: ArrayBuffer) => void} handlers.onChunk  16 kHz PCM16 mono, about 40 ms each
   * @param {(level: number) => void} [handlers.onLevel]    RMS level 0..1 of each chunk
   */
  constructor({ onChunk, onLevel }) {
    this.onChunk = onChunk;
    this.onLevel = onLevel || (() => {});
    this.context = null;
    this.stream = null;
    this.node = null;
    this.sending = false;
  }

  get isOpen() {
    return this.node !== null;
  }

  /** Ask for the microphone and start the worklet; throws an Error with a readable message. */
  async open() {
    if (this.node) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser gives no microphone access here (it needs https or localhost).");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      throw new Error(microphoneProblem(error));
    }
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "coda-mic", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { chunkMs: 40 },
    });
    this.node.port.onmessage = ({ data }) => {
      this.onLevel(data.level);
      if (this.sending) this.onChunk(data.pcm);
    };
    source.connect(this.node);
    if (this.context.state === "suspended") await this.context.resume();
  }

  /** Start passing chunks to onChunk. */
  start() {
    this.sending = true;
  }

  /** Stop passing chunks (the last partial chunk is sent first). */
  stop() {
    if (this.sending && this.node) this.node.port.postMessage("flush");
    // The flushed chunk arrives after this call; keep sending until it has.
    setTimeout(() => {
      this.sending = false;
    }, 60);
  }

  close() {
    this.sending = false;
    this.stream?.getTracks().forEach((track) => track.stop());
    this.context?.close();
    this.context = this.stream = this.node = null;
  }
}

export class Player {
  constructor() {
    this.context = null;
    this.nextStart = 0;
    this.sources = new Set();
    this.onchange = () => {};
  }

  /** Create or resume the output context (call from a user gesture so autoplay rules allow it). */
  unlock() {
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") this.context.resume();
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Queue PCM16 mono bytes at sampleRate right after what is already queued. */
  play(bytes, sampleRate) {
    if (!bytes || bytes.byteLength < 2 || !sampleRate) return;
    this.unlock();
    const context = this.context;
    const samples = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
    const buffer = context.createBuffer(1, samples.length, sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    // Back to back with the previous chunk; a small lead when the queue ran dry absorbs jitter.
    const start = Math.max(this.nextStart, context.currentTime + 0.06);
    source.start(start);
    this.nextStart = start + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      if (this.sources.size === 0) this.onchange(false);
    };
    if (this.sources.size === 1) this.onchange(true);
  }

  /** Stop at once and drop everything queued (barge-in). */
  stop() {
    const had = this.sources.size > 0;
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        /* not started yet */
      }
    }
    this.sources.clear();
    this.nextStart = 0;
    if (had) this.onchange(false);
  }
}
