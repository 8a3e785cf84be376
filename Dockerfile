# NanoMQ in a container: the broker by default, and the `nanomq` command line for the clients.
#   docker build -t nanomq .
#   docker run --rm -p 9000:9000 nanomq                       # a broker on port 9000
#   docker compose up                                        # the three-terminal demo (docker-compose.yml)
# Plain pip install from this source tree: a C compiler builds the C core (cffi) at install time.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir ".[fast]"

# Inside a container the broker must listen on all interfaces to be reachable from others;
# outside one, NanoMQ binds 127.0.0.1 unless told otherwise.
EXPOSE 9000 9100
VOLUME ["/data"]
ENTRYPOINT ["nanomq"]
CMD ["broker", "--host", "0.0.0.0", "--port", "9000", "--data-dir", "/data", "--metrics-port", "9100", "--auto-create-topics"]
