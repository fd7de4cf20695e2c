"""What absl.flags does not do for a program's command line: one-line errors, the refusal of stray
arguments and of a value that is really the next flag, and --help by the groups of the flag block.

absl parses (--name=value, --name value, --name and --noname for switches, the last one given
wins) and refuses an unknown flag or a value that does not convert; here its errors become one
line (FCNError) naming the flag and the nearest real one. The program's flags live in their own
absl FlagValues, so TensorFlow's and absl's own (logging, testing, TPUs) are not taken. No
TensorFlow here.
"""
import difflib
import functools
import re
import textwrap

from absl import flags

from guards import FCNError

HELP_ARGUMENTS = ("-h", "--help", "-help", "--helpfull")
# What a value that does not parse should be, by absl's type name of the flag.
VALUE_KINDS = {"int": "it must be a whole number", "float": "it must be a number",
               "bool": "use true or false"}


class HelpRequest(Exception):
    """-h, --help or --helpfull on the command line; args[0] is the text to print."""


def definers(flag_values):
    """absl's DEFINE_string, DEFINE_integer, DEFINE_float and DEFINE_bool, defining into
    flag_values."""
    return tuple(functools.partial(define, flag_values=flag_values)
                 for define in (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float,
                                flags.DEFINE_bool))


def closest_flag(name, names):
    """The flag name nearest to a mistyped one (difflib's ratio of at least 0.6), or None."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


def _did_you_mean(name, names, value=""):
    nearest = closest_flag(name, names)
    return "; did you mean --%s%s?" % (nearest, value) if nearest else ""


def _refuse_a_flag_as_value(args, flag_values):
    """absl would take the argument after a value flag as its value even when it is the next
    flag (--logs_dir --mode=train), or fail with a bare error when there is none."""
    for position, arg in enumerate(args):
        name, equals, _ = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or equals or name not in flag_values \
                or flag_values[name].boolean:
            continue
        if position + 1 == len(args) or args[position + 1].startswith("--"):
            raise FCNError("--%s needs a value: --%s=VALUE" % (name, name))


def parse(argv, flag_values, program, defined_in):
    """Parses argv (argv[0] the program) into flag_values, every flag not given at its default.

    Raises HelpRequest for -h, --help, --helpfull (the help of the flags that the source file
    `defined_in` defines), and FCNError (one line) for a flag that is not one of these (naming
    the nearest that is), an argument that is not a flag, or a value of the wrong type; the
    flags are then left at their defaults. Whether the values make sense is the program's.
    """
    args = list(argv[1:])
    for arg in args:
        if arg in HELP_ARGUMENTS:
            with open(defined_in, encoding="utf-8") as f:
                groups = flag_groups(f.read())
            raise HelpRequest(help_text(flag_values, groups, program,
                                        full=arg == "--helpfull"))
    names = list(flag_values)
    flag_values.unparse_flags()
    try:
        _refuse_a_flag_as_value(args, flag_values)
        try:
            rest = flag_values([argv[0]] + args)
        except flags.UnrecognizedFlagError as e:
            raise FCNError("unknown flag %s%s (python %s --help lists the flags)"
                           % (e.flagvalue, _did_you_mean(e.flagname, names), program))
        except flags.Error as e:  # absl's "flag --NAME=VALUE: why"
            match = re.match(r"flag --(\w+)=(.*?): ", str(e))
            if not match:
                raise FCNError(str(e).splitlines()[0])
            kind = VALUE_KINDS.get(flag_values[match.group(1)].flag_type(), "not a valid value")
            raise FCNError("--%s=%s: %s" % (match.group(1), match.group(2), kind))
        if rest[1:]:
            arg = rest[1]
            name, equals, value = arg.partition("=")
            raise FCNError("unexpected argument '%s': this program takes only flags, "
                           "--name=value%s" % (arg, _did_you_mean(name, names, equals + value)))
    except FCNError:
        flag_values.unparse_flags()
        raise


def flag_groups(source):
    """[(heading, [flag names])] in the order a source text's flag block defines them, under
    its '# ---- heading ----' comments."""
    groups, heading = [], "flags"
    for line in source.splitlines():
        header = re.match(r"# -+ (.+?) -+$", line)
        define = re.match(r'(?:tf\.)?(?:flags\.)?DEFINE_\w+\(\s*"(\w+)"', line)
        if header:
            heading = header.group(1)
        elif define:
            if not groups or groups[-1][0] != heading:
                groups.append((heading, []))
            groups[-1][1].append(define.group(1))
    return groups


def _default_text(flag):
    if flag.boolean:
        return "on" if flag.default else "off"
    return "none" if flag.default in (None, "") else str(flag.default)


def help_text(flag_values, groups, program, full=False):
    """What -h and --help print: the flags by group (name, default, help), flags in no group
    last; --helpfull adds how the command line is read."""
    listed = {name for _, names in groups for name in names}
    others = [name for name in flag_values if name not in listed]
    groups = list(groups) + ([("other", others)] if others else [])
    lines = ["usage: python %s --flag=value ...   (python %s --mode=train trains)"
             % (program, program)]
    for heading, names in groups:
        lines += ["", heading + ":"]
        for name in names:
            if name not in flag_values:
                continue
            flag = flag_values[name]
            spelled = "--%s, --no%s" % (name, name) if flag.boolean else "--%s" % name
            lines.append("  %s  (default: %s)" % (spelled, _default_text(flag)))
            lines += textwrap.wrap(flag.help, 96, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    if full:
        lines += ["", "How the command line is read:"] + textwrap.wrap(
            "A value follows = or comes as the next argument; a switch is turned on by --name "
            "and off by --noname; the last of a flag given twice wins. Anything else is an "
            "error: a flag not listed above (TensorFlow's and absl's own flags, for logging, "
            "testing or TPUs, are not taken: --verbose shows TensorFlow's messages) or an "
            "argument that is not a flag. -h and --help print the flags, --helpfull this too.",
            96, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)
