"""The CLI through its entry point against Google Cloud Storage (the real client and
gcp-storage-emulator): upload then list, an unchanged re-upload, and a missing bucket."""


def test_upload_and_list_on_a_gcs_bucket(cli, tiny, gcs_bucket, gcs_env):
    env = {"LORA_CLOUD_STORAGE": f"gs://{gcs_bucket}/lora", "STORAGE_EMULATOR_HOST": gcs_env.url}
    out = cli.json("dataset", "upload", str(tiny), "--name", "x", **env)
    assert out["files"] == 16 and out["url"] == f"gs://{gcs_bucket}/lora/datasets/x/"
    listed = cli.json("dataset", "list", **env)
    assert [(d["name"], d["images"], d["captioned"]) for d in listed] == [("x", 8, 8)]
    again = cli.json("dataset", "upload", str(tiny), "--name", "x", **env)
    assert again["files"] == 0 and again["bytes"] == 0
    # the objects really are in the bucket, under the prefix
    client = gcs_env.client()
    names = {b.name for b in client.list_blobs(gcs_bucket, prefix="lora/datasets/x/")}
    assert "lora/datasets/x/astronaut.jpg" in names and "lora/datasets/x/dataset.json" in names


def test_missing_bucket_is_a_clear_error(cli, tiny, gcs_env):
    env = {"LORA_CLOUD_STORAGE": "gs://no-such-bucket-here", "STORAGE_EMULATOR_HOST": gcs_env.url}
    proc = cli("dataset", "list", check=3, **env)
    assert "no-such-bucket-here" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("dataset", "upload", str(tiny), "--name", "x", check=3, **env)
    assert "no-such-bucket-here" in proc.stderr
