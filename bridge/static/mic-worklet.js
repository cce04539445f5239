/**
 * AudioWorklet processor "coda-mic": microphone audio at the context's rate in, 16 kHz mono PCM16
 * chunks out (posted to the node's port as transferable ArrayBuffers), plus an input level.
 *
 * Decimation integrates the input between two output instants (a box filter), which keeps the
 * aliasing of 48 -> 16 kHz speech well below what a recogniser notices, at a few adds per sample.
 */
const TARGET_RATE = 16000;

class CodaMicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const chunkMs = options?.processorOptions?.chunkMs ?? 40;
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.chunk = new Int16Array(Math.round((TARGET_RATE * chunkMs) / 1000));
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples since the last output sample
    this.levelSum = 0;
    this.levelCount = 0;
    this.port.onmessage = (message) => {
      if (message.data === "flush") this.flush();
    };
  }

  emit(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === this.chunk.length) this.flush();
  }

  flush() {
    if (this.filled === 0) return;
    const out = this.chunk.slice(0, this.filled);
    this.filled = 0;
    const level = this.levelCount ? Math.sqrt(this.levelSum / this.levelCount) : 0;
    this.levelSum = 0;
    this.levelCount = 0;
    this.port.postMessage({ pcm: out.buffer, level }, [out.buffer]);
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let sample = 0;
      for (let c = 0; c < channels; c++) sample += input[c][i];
      sample /= channels;
      this.levelSum += sample * sample;
      this.levelCount += 1;
      this.sum += sample;
      this.count += 1;
      this.position += 1;
      while (this.position >= this.step) {
        this.emit(this.sum / this.count);
        this.position -= this.step;
        if (this.position >= this.step) continue; // upsampling: repeat the same value
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("coda-mic", CodaMicProcessor);
