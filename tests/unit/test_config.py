import pytest

from tuneforge.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from tuneforge.errors import InputError


def test_run_config_round_trips_through_dict():
    config = RunConfig(
        data=DataConfig(train="t.csv", multi_label=True),
        output="out",
        method=MethodConfig(name="lora", target_modules=["query"]),
        train=TrainConfig(epochs=2, learning_rate=1e-4),
    )
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "build",
    [
        lambda: TrainConfig(epochs=0),
        lambda: TrainConfig(batch_size="big"),
        lambda: TrainConfig(learning_rate=-1.0),
        lambda: TrainConfig(precision="fp8"),
        lambda: TrainConfig(warmup_ratio=1.5),
        lambda: ModelConfig(max_length=2),
        lambda: DataConfig(train="x", validation_fraction=0.7),
        lambda: MethodConfig(lora_r=0),
    ],
)
def test_invalid_values_are_input_errors(build):
    with pytest.raises(InputError):
        build()


def test_unknown_keys_are_named():
    with pytest.raises(InputError, match="bogus"):
        RunConfig.from_dict({"data": {"train": "x", "bogus": 1}, "output": "o"})
