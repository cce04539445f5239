"""Voice: Transcribe (audio -> text) and Synthesize (text -> audio) over gRPC.

Pure cores (`audio`, `segmenter`, `sentences`), pluggable engines (`engines/`), the grpc.aio
servicer (`service`) and a Wyoming server exposing the embedded engines (`wyoming_server`).
"""
