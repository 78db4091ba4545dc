"""Runs the seed's `config/portable.toml` end to end on this machine.

`just portable` calls it (after building `toka`); so does the integration
test `tests/cli_portable.rs`, which then checks what it printed. It:

1. starts `moto_server` (an S3-compatible server, `pip install 'moto[server]'`)
   on a free loopback port, creates an IAM user with an access key and the
   seed's bucket `my-assets`, then turns moto's signature checking on, so a
   wrong key would be refused;
2. sets the variables `config/portable.toml` reads (`AWS_KEY`, `AWS_SECRET`,
   `S3_ENDPOINT`, `S3_PATH_STYLE`, `S3_ALLOW_PRIVATE`, `STRIPE_SK`,
   `STRIPE_WEBHOOK`, `TOKA_LISTEN`) and runs
   `toka run config/portable.toml --for 10s`, its output shown as it comes;
3. once the Stripe route listens, posts a test webhook signed with the
   official `stripe` library (`pip install stripe`);
4. after the run, reads `index/latest.json` back from the bucket with boto3
   (an independent S3 client) and prints `OBJECT <sha256> <count>` and the
   paths it lists, then `WEBHOOK <status>`.

Usage: python3 tests/portable.py [path/to/toka] [--for 10s]
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import stripe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "my-assets"
WEBHOOK_SECRET = "whsec_portable_demo_secret"
EVENT = {
    "id": "evt_portable_1",
    "object": "event",
    "type": "checkout.session.completed",
    "data": {"object": {"id": "cs_test_1", "amount_total": 1999, "currency": "eur"}},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what, limit=60.0):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on 127.0.0.1:{port} within {limit:.0f} s")


def start_moto():
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="1000000")
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_listening(port, proc, "moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    setup = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="toka")
    iam.put_user_policy(
        UserName="toka",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="toka")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
    # From here on moto checks every request's signature.
    urllib.request.urlopen(
        urllib.request.Request(
            endpoint + "/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
    ).read()
    return proc, endpoint, key["AccessKeyId"], key["SecretAccessKey"]


def post_webhook(port):
    body = json.dumps(EVENT).encode()
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), WEBHOOK_SECRET, int(time.time())
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stripe/webhook",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    args = sys.argv[1:]
    toka = os.path.join(ROOT, "target", "release", "toka")
    duration = "10s"
    while args:
        arg = args.pop(0)
        if arg == "--for":
            duration = args.pop(0)
        else:
            toka = arg
    moto, endpoint, key, secret = start_moto()
    try:
        listen = free_port()
        env = dict(
            os.environ,
            AWS_KEY=key,
            AWS_SECRET=secret,
            S3_ENDPOINT=endpoint,
            S3_PATH_STYLE="true",
            S3_ALLOW_PRIVATE="127.0.0.1/32",
            STRIPE_SK="sk_test_portable",
            STRIPE_WEBHOOK=WEBHOOK_SECRET,
            TOKA_LISTEN=f"127.0.0.1:{listen}",
        )
        config = os.path.join(ROOT, "config", "portable.toml")
        run = subprocess.Popen([toka, "run", config, "--for", duration], env=env)
        status = []
        wait_listening(listen, run, "toka")
        poster = threading.Thread(target=lambda: status.append(post_webhook(listen)))
        poster.start()
        code = run.wait()
        poster.join()
        if code != 0:
            sys.exit(f"toka exited with {code}")
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )
        body = s3.get_object(Bucket=BUCKET, Key="index/latest.json")["Body"].read()
        index = json.loads(body)
        print("OBJECT", hashlib.sha256(body).hexdigest(), index["count"], flush=True)
        for f in index["files"]:
            print("FILE", f["path"], f["size"], f["sha256"], flush=True)
        print("WEBHOOK", status[0] if status else "none", flush=True)
    finally:
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()
