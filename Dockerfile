# One image for every stage: `trailmark up` (all in one), `trailmark collector`, `trailmark enricher`,
# `trailmark journey-builder`. The tracker (ingest/static/t.js) is committed, so no Node build here.
#
#   docker build -t trailmark .
#   docker run -p 8000:8000 -v trailmark-data:/var/lib/trailmark trailmark            # embedded: up
#   docker run -e TRAILMARK_KAFKA_BOOTSTRAP=kafka:9092 ... trailmark collector         # one stage
#
# See compose.yaml for Kafka (KRaft) + ClickHouse + the three stages.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trailmark trailmark
COPY schemas schemas
COPY ingest ingest
COPY enrich enrich
COPY journey_builder journey_builder
# journey_builder/core.py compiled by mypyc, as `make native` does (see the Makefile): 7–13 % more
# events per CPU second for the journey builder. mypyc type-checks core.py, so the package and its
# dependencies are installed first. If anything here fails, the image still builds and runs core.py
# as Python. (Not built here: no Docker daemon on the development machine.)
RUN (apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
     && pip install --no-cache-dir -q . "mypy==2.4.1" "setuptools>=77" \
     && mypyc journey_builder/core.py >/dev/null && rm -rf build \
     && sha256sum journey_builder/core.py | cut -d' ' -f1 >journey_builder/core_native.sha256) \
    || rm -f journey_builder/*.so journey_builder/core_native.sha256
# trailmark/native (Rust), the Kafka journey builder's reader of enriched records and the funnel's and
# attribution's counters, as `make native` builds it (its record hashes trailmark/compiled.py's SOURCES, in
# order), with the toolchain of the official Rust image; if it fails, records are read by orjson.
COPY --from=rust:1-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1-slim-bookworm /usr/local/rustup /usr/local/rustup
RUN (export CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH \
     && cargo build -q --release --locked --manifest-path trailmark/native/Cargo.toml --target-dir /tmp/cargo \
     && cp /tmp/cargo/release/lib_native.so trailmark/_native.abi3.so \
     && cat trailmark/native/Cargo.toml trailmark/native/Cargo.lock trailmark/native/src/lib.rs \
        trailmark/native/src/blocks.rs trailmark/native/src/funnel.rs trailmark/native/src/attribution.rs \
        | sha256sum | cut -d' ' -f1 >trailmark/_native.sha256) \
    || rm -f trailmark/_native.*.so trailmark/_native.sha256; rm -rf /tmp/cargo /usr/local/cargo /usr/local/rustup
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/trailmark --shell /usr/sbin/nologin trailmark \
    && mkdir -p /var/lib/trailmark /var/lib/trailmark-spool \
    && chown trailmark:trailmark /var/lib/trailmark /var/lib/trailmark-spool
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER trailmark
WORKDIR /var/lib/trailmark
ENV PYTHONUNBUFFERED=1 \
    TRAILMARK_HOST=0.0.0.0 \
    TRAILMARK_PORT=8000 \
    TRAILMARK_DATA_DIR=/var/lib/trailmark
VOLUME ["/var/lib/trailmark"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('TRAILMARK_PORT', '8000'), timeout=2)"
# SIGTERM = graceful stop: finish and commit the batch in hand, flush, leave the consumer group.
STOPSIGNAL SIGTERM
ENTRYPOINT ["trailmark"]
CMD ["up"]
