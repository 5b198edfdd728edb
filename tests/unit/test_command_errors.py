"""jsonargparse's nested parse errors condensed to one line that names the option."""

from genlit.commands.errors import parse_error_line

NESTED = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'genlit.families.gan.GAN':
        Parser key "loss":
          Expected a typing.Literal['non_saturating', 'hinge']. Got value: foo
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='loss', val='foo')"""


def test_nested_literal_error():
    line = parse_error_line(NESTED)
    assert line == "--model.loss: Expected a typing.Literal['non_saturating', 'hinge']. Got value: foo  (see --help)"


def test_flat_and_unknown_option_errors():
    flat = "Parser key \"trainer.max_steps\":\n  Expected a <class 'int'>. Got value: abc"
    assert parse_error_line(flat) == "--trainer.max_steps: Expected a <class 'int'>. Got value: abc  (see --help)"
    unknown = NESTED.replace('Parser key "loss":\n', "").replace(
        "Expected a typing.Literal['non_saturating', 'hinge']. Got value: foo", "Option 'nonsense' is not accepted"
    )
    assert parse_error_line(unknown) == "--model: Option 'nonsense' is not accepted  (see --help)"
    assert parse_error_line("unrecognized arguments: --x 1") == "unrecognized arguments: --x 1  (see --help)"
