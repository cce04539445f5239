"""The pure voice cores: audio conversion, the utterance segmenter, the sentence splitter, the
domain language model's corpus and files; and the segmenter with the real VADs on eSpeak speech
(end-pointing latency), which needs no server."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coda.config import VoiceConfig
from coda.llm.agent.intents import match_intent
from coda.llm.agent.numbers import words_to_digits
from coda.v1 import voice_pb2
from coda.voice.audio import (
    FLOAT32,
    PCM16,
    AudioFormatError,
    InputFormat,
    PcmDecoder,
    Rechunker,
    Resampler,
    validate_format,
)
from coda.voice.denoise import suppress_noise
from coda.voice.domain_language import (
    arpa_model,
    build_domain_model,
    command_families,
    number_words,
    read_pronunciations,
    training_corpus,
)
from coda.voice.engines import whisper_stt
from coda.voice.engines.pocketsphinx_stt import PocketsphinxStt
from coda.voice.engines.silero_vad import SileroVad
from coda.voice.engines.webrtc_vad import WebRtcVad
from coda.voice.quality import word_error_rate
from coda.voice.segmenter import (
    END_MAX_LENGTH,
    END_OF_STREAM,
    END_SILENCE,
    Segmenter,
    SegmenterSettings,
    SpeechAudio,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)
from coda.voice.sentences import SentenceSplitter
from tests.espeak_speech import espeak_speech


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


# --- audio -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (voice_pb2.AudioFormat(encoding=PCM16, sample_rate=0), "sample_rate 0 Hz is out of range"),
        (voice_pb2.AudioFormat(encoding=PCM16, sample_rate=16000, channels=5), "5 channels"),
        (voice_pb2.AudioFormat(sample_rate=16000), "encoding must be"),
        (voice_pb2.AudioFormat(encoding=7, sample_rate=16000), "encoding must be"),
    ],
)
def test_bad_formats_are_rejected_with_the_reason(fmt: voice_pb2.AudioFormat, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        validate_format(fmt)


def test_zero_channels_means_mono() -> None:
    assert validate_format(voice_pb2.AudioFormat(encoding=FLOAT32, sample_rate=48000)).channels == 1


@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=20),
    st.sampled_from([(22050, 16000), (8000, 16000), (48000, 16000)]),
)
@settings(max_examples=30, deadline=None)
def test_chunked_resampling_matches_one_shot(cuts: list[int], rates: tuple[int, int]) -> None:
    src, dst = rates
    signal = tone(0.5, src) + tone(0.5, src, 3000.0, 2000.0)
    whole = Resampler(src, dst).process(signal)
    chunked_resampler = Resampler(src, dst)
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(chunked_resampler.process(signal[start : start + cut]))
        start += cut
    pieces.append(chunked_resampler.process(signal[start:]))
    chunked = np.concatenate(pieces)
    assert len(chunked) == len(whole)
    assert np.allclose(chunked, whole, atol=1e-6)
    assert abs(len(whole) - len(signal) * dst / src) <= 1


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    # A 10 kHz tone is above 8 kHz Nyquist of 16 kHz output: it must be filtered, not folded to 6 kHz.
    out = Resampler(44100, 16000).process(tone(1.0, 44100, 10_000.0))
    assert np.sqrt(np.mean(out[200:] ** 2)) < 0.05 * 8000
    kept = Resampler(44100, 16000).process(tone(1.0, 44100, 1_000.0))
    assert np.sqrt(np.mean(kept[200:] ** 2)) > 0.6 * 8000


def test_decoder_carries_odd_bytes_and_split_frames() -> None:
    samples = pcm(tone(0.1))
    decoder = PcmDecoder(InputFormat(PCM16, 16000, 1), 16000)
    out = b"".join(decoder.push(samples[i : i + 3]) for i in range(0, len(samples), 3))
    assert out == samples


def test_decoder_downmixes_stereo_float32() -> None:
    left = tone(0.1) / 32767.0
    right = -left * 0.5
    interleaved = np.stack([left, right], axis=1).astype("<f4").tobytes()
    decoder = PcmDecoder(InputFormat(FLOAT32, 16000, 2), 16000)
    out = np.frombuffer(b"".join(decoder.push(interleaved[i : i + 7]) for i in range(0, len(interleaved), 7)), "<i2")
    assert np.allclose(out, np.rint((left + right) / 2 * 32767.0), atol=1)


def test_rechunker_cuts_fixed_chunks_and_flushes_the_rest() -> None:
    chunker = Rechunker(4)
    assert chunker.push(b"abcdefghij") == [b"abcd", b"efgh"]
    assert chunker.flush() == b"ij"
    assert chunker.flush() == b""


# --- segmenter -------------------------------------------------------------------------------


def energy_vad(frame: bytes) -> bool:
    """A deterministic stand-in for a VAD's decision, so boundaries are exact."""
    return float(np.abs(np.frombuffer(frame, "<i2")).mean()) > 1000


def run(segmenter: Segmenter, audio: bytes, chunk: int = 1234) -> list:
    actions = []
    for i in range(0, len(audio), chunk):
        actions += segmenter.push(audio[i : i + chunk])
    return actions + segmenter.finish()


def test_segmenter_finds_speech_between_silences() -> None:
    audio = pcm(np.concatenate([np.zeros(16000), tone(1.5), np.zeros(16000)]))
    actions = run(Segmenter(energy_vad, SegmenterSettings(silence_ms=600)), audio)
    kinds = [type(a) for a in actions if not isinstance(a, SpeechAudio)]
    assert kinds == [SpeechStarted, SpeechEnded]
    started, ended = actions[0], next(a for a in actions if isinstance(a, SpeechEnded))
    assert started.offset_ms == pytest.approx(1000, abs=30)
    assert ended.offset_ms == pytest.approx(2500, abs=30)
    assert ended.reason == END_SILENCE
    assert ended.duration_ms == pytest.approx(1500, abs=60)
    # Pre-roll: the recogniser gets audio from before the detected start.
    assert len(started.audio) >= SegmenterSettings().frame_bytes * 10


def test_short_pause_does_not_end_and_continuous_finds_several() -> None:
    gap = np.zeros(int(0.3 * 16000))
    long_gap = np.zeros(16000)
    audio = pcm(np.concatenate([long_gap, tone(0.6), gap, tone(0.6), long_gap, tone(0.6), long_gap]))
    actions = run(Segmenter(energy_vad, SegmenterSettings(silence_ms=600, continuous=True)), audio)
    assert sum(isinstance(a, SpeechEnded) for a in actions) == 2
    single = run(Segmenter(energy_vad, SegmenterSettings(silence_ms=600)), audio)
    assert sum(isinstance(a, SpeechEnded) for a in single) == 1


def test_pauses_are_reported_before_the_end_and_resumed_when_speech_goes_on() -> None:
    gap = np.zeros(int(0.3 * 16000))
    audio = pcm(np.concatenate([np.zeros(16000), tone(0.6), gap, tone(0.6), np.zeros(16000)]))
    settings = SegmenterSettings(silence_ms=600, pause_ms=90)
    actions = [a for a in run(Segmenter(energy_vad, settings), audio) if not isinstance(a, SpeechAudio)]
    assert [type(a) for a in actions] == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, SpeechEnded]
    first_pause, resumed, last_pause, ended = actions[1:]
    assert first_pause.offset_ms == pytest.approx(1600 + 90, abs=30)
    assert resumed.offset_ms == pytest.approx(1900, abs=30)
    # The last pause comes silence_ms - pause_ms before the end is confirmed: time to decode early.
    assert last_pause.offset_ms == pytest.approx(2500 + 90, abs=30)
    assert ended.offset_ms == pytest.approx(2500, abs=30)
    # The audio up to a pause is handed on before it is reported (a draft decode sees all of it).
    actions = run(Segmenter(energy_vad, settings), audio)
    for before, action in itertools.pairwise(actions):
        if isinstance(action, SpeechPaused):
            assert isinstance(before, SpeechAudio)
    assert [type(a) for a in run(Segmenter(energy_vad, SegmenterSettings(silence_ms=600)), audio)].count(
        SpeechPaused
    ) == 0


def test_silence_only_produces_nothing() -> None:
    assert run(Segmenter(energy_vad, SegmenterSettings()), bytes(16000 * 2 * 5)) == []


def test_end_of_stream_closes_open_speech() -> None:
    actions = run(Segmenter(energy_vad, SegmenterSettings()), pcm(tone(1.0)))
    assert isinstance(actions[-1], SpeechEnded) and actions[-1].reason == END_OF_STREAM


def test_a_late_classifier_is_compensated_so_the_end_comes_silence_ms_after_speech() -> None:
    """A recurrent VAD reports silence a few frames late; vad_lag_ms takes that back off."""
    lag_frames = 2
    decisions: list[bool] = []

    def late_vad(frame: bytes) -> bool:
        decisions.append(energy_vad(frame))
        return any(decisions[-1 - lag_frames :])  # voiced until lag_frames after the energy stops

    settings = SegmenterSettings(frame_ms=30, silence_ms=300, vad_lag_ms=lag_frames * 30)
    segmenter = Segmenter(late_vad, settings)
    audio = pcm(np.concatenate([np.zeros(16000), tone(1.0), np.zeros(16000)]))
    ended_at = None
    for i in range(0, len(audio), settings.frame_bytes):
        if any(isinstance(a, SpeechEnded) for a in segmenter.push(audio[i : i + settings.frame_bytes])):
            ended_at = segmenter.position_ms
    assert ended_at == pytest.approx(2000 + 300, abs=30)  # not 2000 + 300 + 60


def test_ten_minutes_of_noise_are_force_finalized_with_bounded_buffers() -> None:
    """Loud white noise is 'speech' to the real WebRTC VAD (measured: 100% of frames at sigma 3000):
    without a cap the utterance would never end."""
    vad = WebRtcVad().classifier()
    segmenter = Segmenter(vad.is_speech, SegmenterSettings(max_utterance_ms=10_000, continuous=True))
    rng = np.random.default_rng(7)
    ended = []
    peak = 0
    for _ in range(600):  # ten minutes, one second at a time
        actions = segmenter.push(pcm(rng.normal(0, 3000, 16000)))
        ended += [a for a in actions if isinstance(a, SpeechEnded)]
        peak = max(peak, segmenter.buffered_bytes)
    assert len(ended) >= 55
    assert all(a.reason == END_MAX_LENGTH for a in ended)
    assert all(a.duration_ms <= 10_000 + 30 for a in ended)  # one 30 ms frame of granularity
    assert peak <= SegmenterSettings().frame_bytes * 11  # pre-roll window plus one partial frame


# --- end-pointing with the default VAD on speech ---------------------------------------------

END_POINTED = ["hello coda", "set a timer for five minutes", "the quick brown fox jumps over the lazy dog"]


def speech_bounds_ms(audio: bytes) -> tuple[float, float]:
    """Where the speech really starts and ends: the first and last sample above -40 dB of its peak."""
    level = np.abs(np.frombuffer(audio, "<i2").astype(np.float64))
    loud = np.nonzero(level > 0.01 * level.max())[0]
    return loud[0] / 16, loud[-1] / 16


@pytest.mark.parametrize("voice", ["en-us", "en-us+f2"])
async def test_silero_reports_onset_within_250_ms_and_the_end_silence_ms_after_speech(voice: str) -> None:
    """Barge-in waits for the onset (voice.vad_speech_started); the reply waits for the end. Both are
    measured in audio time from where eSpeak's speech really starts and ends. Measured on these
    sentences: onset 86-171 ms, end 194-327 ms after the speech with silence_ms 300."""
    vad = SileroVad()
    await vad.load()
    silence_ms = VoiceConfig().silence_ms
    assert silence_ms <= 300
    settings = SegmenterSettings(
        frame_ms=vad.frame_ms,
        silence_ms=silence_ms,
        start_window_ms=vad.start_window_ms,
        vad_lag_ms=vad.end_lag_ms,
    )
    for text in END_POINTED:
        spoken = await espeak_speech(text, voice)
        onset, end = (1000 + t for t in speech_bounds_ms(spoken))
        audio = bytes(32_000) + spoken + bytes(32_000)
        segmenter = Segmenter(vad.classifier().is_speech, settings)
        started_at = ended_at = None
        for i in range(0, len(audio), settings.frame_bytes):  # one frame at a time, as a live mic
            for action in segmenter.push(audio[i : i + settings.frame_bytes]):
                if isinstance(action, SpeechStarted):
                    started_at = segmenter.position_ms
                elif isinstance(action, SpeechEnded):
                    ended_at = segmenter.position_ms
                    assert action.reason == END_SILENCE
        assert started_at is not None and ended_at is not None, text
        assert 0 < started_at - onset <= 250, (text, started_at - onset)
        assert 0 < ended_at - end <= silence_ms + vad.frame_ms, (text, ended_at - end)


def test_silero_does_not_take_white_noise_for_speech() -> None:
    """The noise WebRTC calls speech on every frame (see the force-finalize test above)."""
    vad = SileroVad()
    classifier = vad.classifier()
    noise = pcm(np.random.default_rng(7).normal(0, 3000, 16000 * 3))
    frames = [noise[i : i + 1024] for i in range(0, len(noise) - 1023, 1024)]
    assert sum(classifier.is_speech(f) for f in frames) <= len(frames) // 20


# --- sentence splitter -----------------------------------------------------------------------


def test_sentences_come_out_as_soon_as_complete() -> None:
    splitter = SentenceSplitter()
    out = []
    for token in ["Hel", "lo there", ". It is ", "3.14 degrees, Dr", ". Smith! Really", "?", " Yes"]:
        out.append(splitter.feed(token))
    assert out == [[], [], ["Hello there."], [], ["It is 3.14 degrees, Dr. Smith!"], ["Really?"], []]
    assert splitter.flush() == ["Yes"]
    assert splitter.flush() == []


def test_a_sentence_end_at_the_end_of_the_text_so_far_ends_it_at_once() -> None:
    """The next token need not arrive first, unless the full stop may belong to a number or an
    abbreviation."""
    for text in ("The capital is Tokyo.", "Hi there!", "Really?", "Well\u2026", 'He said "yes."', "Wait..."):
        assert SentenceSplitter().feed(text) == [text]
    for text in ("It is 3.", "Ask Dr.", "Bring tools, e.g.", "Born in the U.S.", "Done"):
        splitter = SentenceSplitter()
        assert splitter.feed(text) == [], text
        assert splitter.flush() == [text]
    splitter = SentenceSplitter()
    assert splitter.feed("It is 3.") == []
    assert splitter.feed("14 degrees.") == ["It is 3.14 degrees."]


def test_runaway_text_is_cut_at_a_word_boundary() -> None:
    splitter = SentenceSplitter(max_chars=40)
    out = splitter.feed("word " * 20)
    assert out and all(len(s) <= 40 for s in out)
    assert all(not s.endswith("wor") for s in out)


def test_the_first_piece_may_end_at_a_clause_break() -> None:
    splitter = SentenceSplitter(first_clause_words=3)
    assert splitter.feed("Sure, here") == []  # one word before the comma: too short a piece
    assert splitter.feed(" is one, about a tomato. It turned red, then") == ["Sure, here is one,", "about a tomato."]
    # Only the first piece: after it, sentences end where sentences end.
    assert splitter.feed(" it saw the salad dressing. ") == ["It turned red, then it saw the salad dressing."]
    assert SentenceSplitter(first_clause_words=3).feed("It's 11:24 on Saturday, 5 December 2026. ") == [
        "It's 11:24 on Saturday,",
        "5 December 2026.",
    ]
    assert SentenceSplitter(first_clause_words=3).feed("We sold 1,000 units today. ") == ["We sold 1,000 units today."]


@given(
    st.text(alphabet=st.sampled_from(list("abc .!?,\n")), max_size=300),
    st.lists(st.integers(1, 15), max_size=40),
    st.sampled_from([0, 1, 3]),
)
@settings(max_examples=150, deadline=None)
def test_splitting_never_loses_or_reorders_text(text: str, cuts: list[int], first_clause_words: int) -> None:
    splitter = SentenceSplitter(max_chars=30, first_clause_words=first_clause_words)
    out, start = [], 0
    for cut in cuts:
        out += splitter.feed(text[start : start + cut])
        start += cut
    out += splitter.feed(text[start:])
    out += splitter.flush()
    assert "".join(out).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert all(s == s.strip() and s for s in out)


def test_word_error_rate() -> None:
    assert word_error_rate("open the garage door", "Open the garage door.") == 0
    assert word_error_rate("open the garage door", "open a garage") == 0.5
    # Digits are read as words and one spelling is used, as Whisper writes "12" and "favorite".
    assert word_error_rate("what is twelve times seven", "What is 12 times 7?") == 0
    assert word_error_rate("my favourite colour", "My favorite color.") == 0
    assert word_error_rate("one hundred twenty three", "123") == 0


# --- the domain language model -----------------------------------------------------------------


@given(st.integers(min_value=0, max_value=999))
def test_number_words_are_read_back_by_the_agent(n: int) -> None:
    assert words_to_digits(number_words(n)) == str(n)


def test_number_words_outside_their_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.999"):
        number_words(1000)


def test_every_command_sentence_means_its_intent_to_the_agent() -> None:
    families = command_families()
    assert {name for name, _ in families} >= {"greeting", "help", "get_time", "set_timer", "remember", "recall"}
    for name, sentences in families:
        if not name:
            continue  # chit-chat, which goes to the language model
        assert sentences, name
        for sentence in sentences:
            intent = match_intent(sentence)
            assert intent is not None and intent.name == name, (sentence, intent)


def test_command_corpus_covers_the_agents_examples_and_slots() -> None:
    sentences = {s for _, family in command_families() for s in family}
    for example in ("what time is it in tokyo", "set a timer for five minutes", "hello coda", "what can you do"):
        assert example in sentences
    assert "what is my favourite colour" in sentences
    assert any(s.endswith(" in new york") for s in sentences)
    arithmetic = " ".join(dict(command_families())["calculate"])
    assert all(f" {number_words(n)} times " in arithmetic for n in range(0, 101))


def test_small_families_weigh_about_as_much_as_big_ones() -> None:
    corpus = training_corpus([("a", ["hello"]), ("b", [f"what is {n}" for n in range(300)])], lines_per_family=300)
    assert corpus.count("hello") == 300 and len(corpus) == 600


def test_arpa_model_has_the_corpus_ngrams() -> None:
    arpa = arpa_model(["hello coda", "hello there"])
    assert "\\data\\" in arpa and "\\end\\" in arpa
    assert "ngram 1=5" in arpa  # <s> </s> hello coda there
    assert " hello coda " in arpa.split("\\3-grams:")[0] and "<s> hello coda" in arpa
    with pytest.raises(ValueError, match="no sentences"):
        arpa_model([" "])


def test_domain_model_trims_the_dictionary_and_drops_unpronounceable_sentences(tmp_path: Path) -> None:
    dictionary = tmp_path / "cmu.dict"
    dictionary.write_text("coda K OW D AH\nhello HH AH L OW\nhello(2) HH EH L OW\ntimer T AY M ER\nzebra Z IY B R AH\n")
    model = build_domain_model(tmp_path / "out", dictionary, ["hello coda", "hello xyzzy", "timer"])
    assert model.dropped_words == ("xyzzy",)
    assert model.vocabulary == {"hello", "coda", "timer"}
    assert model.dict_path.read_text().splitlines() == [
        "coda K OW D AH", "hello HH AH L OW", "hello(2) HH EH L OW", "timer T AY M ER",
    ]  # fmt: skip
    arpa = model.lm_path.read_text()
    assert "xyzzy" not in arpa and "hello coda" in arpa and "zebra" not in arpa


def test_read_pronunciations_keeps_alternates() -> None:
    import pocketsphinx

    cmudict = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    found = read_pronunciations(cmudict, {"coda", "tokyo", "favourite", "colour", "qqqzz"})
    assert set(found) == {"coda", "tokyo", "favourite", "colour"}


def test_unknown_language_model_is_refused() -> None:
    with pytest.raises(ValueError, match="stt_language_model"):
        PocketsphinxStt("klingon")


# -- noise suppression before Whisper --------------------------------------------------------------


def _voiced_bursts(seconds: float = 2.0, rate: int = 16_000) -> np.ndarray:
    """A speech-like test signal: harmonic bursts (150 Hz and its overtones) with gaps between them,
    preceded and followed by 0.3 s of nothing (where a VAD's pre-roll and end pause would be)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.3).astype(np.float64)
    gap = np.zeros(int(0.3 * rate))
    return np.concatenate([gap, 0.2 * tone * envelope, gap]).astype(np.float32)


def _snr_db(reference: np.ndarray, heard: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((heard - reference) ** 2)))


def test_loud_white_noise_is_suppressed() -> None:
    clean = _voiced_bursts()
    speech_power = np.mean(clean[clean != 0] ** 2)
    noise = np.random.default_rng(7).normal(0, np.sqrt(speech_power / 10), len(clean)).astype(np.float32)
    noisy = clean + noise  # 10 dB SNR, the benchmark's noise level
    cleaned = suppress_noise(noisy)
    assert cleaned.dtype == np.float32 and len(cleaned) == len(noisy)
    assert _snr_db(clean, cleaned) > _snr_db(clean, noisy) + 3.0


def test_clean_audio_and_faint_noise_pass_unchanged() -> None:
    clean = _voiced_bursts()
    assert np.array_equal(suppress_noise(clean), clean)  # no noise-only frames: nothing to estimate from
    faint = clean + np.random.default_rng(3).normal(0, 1e-4, len(clean)).astype(np.float32)  # ~60 dB SNR
    assert np.array_equal(suppress_noise(faint), faint)


def test_digital_silence_padding_stays_silent_and_short_audio_is_returned() -> None:
    clean = _voiced_bursts()
    noisy = clean + np.random.default_rng(5).normal(0, 0.05, len(clean)).astype(np.float32)
    padded = np.concatenate([noisy, np.zeros(4800, np.float32)])  # the trailing silence a decode adds
    cleaned = suppress_noise(padded)
    assert np.max(np.abs(cleaned[-4000:])) < 1e-6
    short = noisy[:300]
    assert np.array_equal(suppress_noise(short), short)


# --- Whisper's decode lane, with a stand-in for the CTranslate2 model ----------------------------


class CountingWhisper:
    """Counts encoder passes and beam searches; every search "hears" the same token."""

    def __init__(self) -> None:
        self.encoded = 0
        self.searched = 0
        self.max_length = 448
        self.model = self

    def feature_extractor(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((80, len(audio) // 160 + 1), np.float32)

    def encode(self, features: Any) -> str:
        self.encoded += 1
        return "encoded"

    def generate(self, *args: Any, **kwargs: Any) -> list[SimpleNamespace]:
        self.searched += 1
        return [SimpleNamespace(sequences_ids=[[7]], scores=[-0.1], no_speech_prob=0.0)]


@pytest.fixture
def counting_whisper(monkeypatch: pytest.MonkeyPatch) -> CountingWhisper:
    tokenizer = SimpleNamespace(
        sot_prev=1, sot_sequence=[2, 3], no_timestamps=4, encode=lambda text: [5], decode=lambda ids: " heard"
    )
    monkeypatch.setattr(whisper_stt, "_tokenizer", lambda model, language, prompt: (tokenizer, [1, 2, 3, 4], []))
    return CountingWhisper()


def test_a_decode_voided_during_its_encoder_pass_skips_its_beam_search(counting_whisper: CountingWhisper) -> None:
    options = whisper_stt.DecodeOptions(beam_size=5, language="en", denoise=False, window_seconds=20.0)
    speech = bytes(2 * 16000)
    assert whisper_stt._decode(counting_whisper, speech, options, skip=lambda: True) is None
    assert (counting_whisper.encoded, counting_whisper.searched) == (1, 0)
    assert whisper_stt._decode(counting_whisper, speech, options)[0] == "heard"  # type: ignore[index]
    assert (counting_whisper.encoded, counting_whisper.searched) == (2, 1)


async def test_a_draft_voided_by_speech_resuming_stays_void_after_the_next_pause(
    counting_whisper: CountingWhisper,
) -> None:
    """pause, resume, pause: only the second pause's draft is decoded, not the first one too."""
    stream = whisper_stt._WhisperStream(whisper_stt.WhisperStt(denoise=False), counting_whisper, "en")
    await stream.feed(bytes(2 * 16000))
    await stream.partial()  # on the lane first: both drafts wait behind it
    await stream.pause(200)
    await stream.resume()
    await stream.feed(bytes(2 * 8000))
    await stream.pause(200)
    assert (await stream.finish()).text == "heard"
    assert counting_whisper.encoded == 2  # the partial and the second draft
